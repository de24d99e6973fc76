"""`LocalSpeechEngine` with the bundled Piper voice and espeak-ng (from espeakng-loader): real audio,
decoded again by ffmpeg. One engine for the module (about 1 s to load, 300 MB)."""

from __future__ import annotations

import shutil
import subprocess
import time
import wave
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pytest

from bot.errors import UnsupportedInput, UserFacingError
from engines.base import EngineRequest
from engines.tts import LocalSpeechEngine, SpeakRequest, Speech, split_sentences, with_duration_output

pytestmark = pytest.mark.slow

ENGLISH = "The quick brown fox jumps over the lazy dog."
CHINESE = "你好，世界。今天天气很好！"


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalSpeechEngine]:
    tts = LocalSpeechEngine()
    tts.load()
    yield tts
    tts.unload()


def speak(engine: LocalSpeechEngine, **request: Any) -> Speech:
    [result] = engine.run([EngineRequest(SpeakRequest(**request))])
    if isinstance(result, Exception):
        raise result
    assert isinstance(result, Speech)
    return result


def decoded_seconds(audio: bytes) -> float:
    """Decode any container with ffmpeg to 16 kHz mono PCM and return its length."""
    import imageio_ffmpeg

    ffmpeg = shutil.which("ffmpeg") or imageio_ffmpeg.get_ffmpeg_exe()
    done = subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1",
                           "-ar", "16000", "pipe:1"], input=audio, capture_output=True, timeout=60, check=True)
    return len(done.stdout) / 2 / 16000


def check_timings(speech: Speech) -> None:
    assert speech.phonemes, "expected phoneme timings"
    previous_end = 0.0
    for start, end, label in speech.phonemes:
        assert label and previous_end - 1e-6 <= start < end <= speech.duration_s + 1e-6, (start, end, label)
        previous_end = end


def test_piper_speaks_english(engine: LocalSpeechEngine) -> None:
    started = time.monotonic()
    speech = speak(engine, text=ENGLISH, format="wav")
    elapsed = time.monotonic() - started
    assert (speech.engine, speech.voice, speech.fallback_note) == ("piper", "en_US-joe-medium", None)
    with wave.open(BytesIO(speech.audio)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (22050, 1, 2)
        assert w.getnframes() / w.getframerate() == pytest.approx(speech.duration_s)
        samples = memoryview(w.readframes(w.getnframes())).cast("h")
    assert 1.5 < speech.duration_s < 5.0
    assert max(abs(s) for s in samples) > 8000  # speech, not silence
    assert elapsed / speech.duration_s < 1.0, f"real-time factor {elapsed / speech.duration_s:.2f}"
    check_timings(speech)
    assert {"f", "k", "s"} <= {label[0] for _, _, label in speech.phonemes or []}


def test_chinese_goes_to_espeak_without_a_note(engine: LocalSpeechEngine) -> None:
    speech = speak(engine, text=CHINESE, format="wav")
    assert speech.engine == "espeak-ng" and speech.voice.endswith("cmn")
    assert speech.fallback_note is None
    assert 1.0 < speech.duration_s < 8.0
    check_timings(speech)


@pytest.mark.parametrize("voice", ["natural", "en_US-joe-medium", "zh-CN-XiaoxiaoNeural"])
def test_chinese_with_a_natural_voice_asked_for_notes_the_fallback(engine: LocalSpeechEngine, voice: str) -> None:
    speech = speak(engine, text=CHINESE, voice=voice, format="wav")
    assert speech.engine == "espeak-ng"
    assert speech.fallback_note and "espeak-ng" in speech.fallback_note


def test_other_languages_and_explicit_espeak_voices(engine: LocalSpeechEngine) -> None:
    french = speak(engine, text="Bonjour tout le monde.", language="fr-FR", format="wav")
    assert (french.engine, french.voice, french.fallback_note) == ("espeak-ng", "roa/fr", None)
    forced = speak(engine, text=ENGLISH, voice="espeak-ng", format="wav")
    assert forced.engine == "espeak-ng" and forced.fallback_note is None
    check_timings(forced)


@pytest.mark.parametrize("fmt", ["ogg", "mp3", "m4a", "wav"])
def test_each_format_decodes(engine: LocalSpeechEngine, fmt: str) -> None:
    speech = speak(engine, text="Testing the audio format.", format=fmt)
    assert speech.format == fmt and speech.mime.startswith("audio/")
    assert decoded_seconds(speech.audio) == pytest.approx(speech.duration_s, abs=0.12)


def test_unknown_voice_falls_back_with_a_note(engine: LocalSpeechEngine) -> None:
    speech = speak(engine, text="Hello there.", voice="Nobody", format="wav")
    assert speech.engine == "espeak-ng"
    assert speech.fallback_note == "no voice named Nobody; used espeak-ng"
    styled = speak(engine, text="Hello there.", style="cheerful", format="wav")
    assert styled.engine == "piper" and "cheerful" in (styled.fallback_note or "")


@pytest.mark.parametrize("text", ["", "   \n", "?!…"])
def test_empty_text_errors(engine: LocalSpeechEngine, text: str) -> None:
    with pytest.raises(UnsupportedInput) as caught:
        speak(engine, text=text)
    assert caught.value.key == "tts_empty_text"


def test_long_text_is_spoken_sentence_by_sentence(engine: LocalSpeechEngine) -> None:
    text = "First sentence here. Second one follows!\nIs this the third? And a fourth."
    assert len(split_sentences(text)) == 4
    assert split_sentences("你好。世界！好") == ["你好。", "世界！", "好"]
    notes: list[tuple[float, str]] = []
    request = EngineRequest(SpeakRequest(text=text, language="en", format="wav"),
                            progress=lambda fraction, note: notes.append((fraction, note)))
    [speech] = engine.run([request])
    assert isinstance(speech, Speech) and speech.engine == "piper"
    assert [f for f, _ in notes] == [0.25, 0.5, 0.75, 1.0]
    check_timings(speech)
    slow = speak(engine, text="First sentence here.", rate=0.6, format="wav")
    fast = speak(engine, text="First sentence here.", rate=1.6, format="wav")
    assert slow.duration_s > fast.duration_s * 1.6


def test_cancelled_job_stops(engine: LocalSpeechEngine) -> None:
    request = EngineRequest(SpeakRequest(text="One. Two. Three."), cancelled=lambda: True)
    [result] = engine.run([request])
    assert isinstance(result, UserFacingError) and result.key == "job_cancelled"


def test_duration_patch_rejects_a_model_without_ceil() -> None:
    with pytest.raises(ValueError):
        with_duration_output(b"\x3a\x00")  # a model whose graph is empty
