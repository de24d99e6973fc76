"""What the speech engines share: requests, results, language and sentence helpers, ffmpeg encoding."""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bot.errors import UnsupportedInput, UserFacingError
from engines.audio import ffmpeg_exe, pcm_wav

log = logging.getLogger(__name__)


AudioFormat = Literal["ogg", "mp3", "m4a", "wav"]
MIME = {"ogg": "audio/ogg", "mp3": "audio/mpeg", "m4a": "audio/mp4", "wav": "audio/wav"}
Phoneme = tuple[float, float, str]  # (start_s, end_s, IPA)


@dataclass(frozen=True)
class SpeakRequest:
    """Text to speak. `rate` is a speed multiplier (clamped to 0.5-2); `style`/`role` only Azure knows."""

    text: str
    voice: str | None = None
    language: str | None = None
    style: str | None = None
    role: str | None = None
    format: AudioFormat = "mp3"
    rate: float = 1.0


@dataclass
class Speech:
    audio: bytes
    mime: str
    format: str
    duration_s: float
    voice: str
    engine: str  # "piper", "espeak-ng" or "azure"
    fallback_note: str | None = None
    phonemes: list[Phoneme] | None = None  # monotonic, within [0, duration_s]


class SpeechServiceError(UserFacingError):
    """The hosted speech service failed after retries; callers may catch it and speak locally."""

    def __init__(self, key: str, status: int | None = None, **params: Any) -> None:
        super().__init__(key, **params, **({} if status is None else {"status": status}))
        self.status = status


# -- text -----------------------------------------------------------------------------------------
_SCRIPTS = (("ja", r"\u3040-\u30ff"), ("ko", r"\uac00-\ud7af\u1100-\u11ff"), ("zh", r"\u3400-\u4dbf\u4e00-\u9fff"),
            ("ru", r"\u0400-\u04ff"), ("el", r"\u0370-\u03ff"), ("he", r"\u0590-\u05ff"), ("ar", r"\u0600-\u06ff"),
            ("hi", r"\u0900-\u097f"), ("th", r"\u0e00-\u0e7f"))
_SENTENCE_END = re.compile(r"(?<=[.!?;…])\s+|(?<=[。！？；])\s*|\s*\n\s*")


def detect_language(text: str) -> str:
    """A primary language tag guessed from the script: kana -> ja, Han -> zh, ..., else en."""
    for lang, chars in _SCRIPTS:
        if re.search(f"[{chars}]", text):
            return lang
    return "en"


def split_sentences(text: str, limit: int = 300) -> list[str]:
    """Sentences, each cut further at commas or spaces when longer than `limit` characters."""
    out: list[str] = []
    for sentence in filter(None, (s.strip() for s in _SENTENCE_END.split(text))):
        while len(sentence) > limit:
            cut = max(sentence.rfind(c, 0, limit) for c in ",，、 ")
            cut = cut + 1 if cut > limit // 3 else limit
            out.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            out.append(sentence)
    return out


def _checked(request: Any, max_chars: int) -> SpeakRequest:
    if not isinstance(request, SpeakRequest):
        raise TypeError(f"tts engine takes SpeakRequest, not {type(request).__name__}")
    if request.format not in MIME:
        raise UnsupportedInput("tts_bad_format", format=request.format, formats=", ".join(MIME))
    text = request.text.strip()
    if not any(ch.isalnum() for ch in text):
        raise UnsupportedInput("tts_empty_text")
    if len(text) > max_chars:
        raise UnsupportedInput("tts_text_too_long", length=len(text), limit=max_chars)
    return request


def _lang_tag(language: str | None) -> str | None:
    return language.strip().replace("_", "-").lower() if language and language.strip() else None


# -- audio ------------------------------------------------------------------------------------------
_ENCODE = {
    "ogg": ["-c:a", "libopus", "-b:a", "32k", "-ar", "48000", "-f", "ogg"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "m4a": ["-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", "-f", "ipod"],
}


wav_bytes = pcm_wav  # mono 16-bit PCM as a WAV file (the speech engines' name for it)


def encode_audio(wav: bytes, fmt: str) -> bytes:
    """A WAV file as `fmt` (ogg/opus, mp3, m4a/AAC or wav), through ffmpeg."""
    if fmt == "wav":
        return wav
    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        src, dst = Path(tmp, "in.wav"), Path(tmp, f"out.{fmt}")
        src.write_bytes(wav)
        cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(src), *_ENCODE[fmt], str(dst)]
        done = subprocess.run(cmd, capture_output=True, timeout=300, check=False)
        if done.returncode != 0 or not dst.exists():
            raise RuntimeError(f"ffmpeg could not encode {fmt}: {done.stderr.decode(errors='replace')[-300:]}")
        return dst.read_bytes()


# -- espeak-ng through ctypes -----------------------------------------------------------------------
