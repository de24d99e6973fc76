"""Audio in and out through ffmpeg: decode any chat-platform recording to 16 kHz mono float32, encode
samples for upload, probe a recording's length without decoding it, and find quiet cut points.

ffmpeg comes from PATH, else from the `imageio-ffmpeg` wheel. Bytes go through stdin/stdout; temporary
files only where ffmpeg must seek: reading an MP4/M4A whose index (`moov`) follows its data, and writing
m4a. Every function here blocks: call them from engine worker threads, never on the event loop.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import re
import shutil
import struct
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bot.errors import UnsupportedInput

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
AudioFormat = Literal["ogg", "mp3", "m4a", "wav", "webm"]
MIME: dict[str, str] = {"ogg": "audio/ogg", "mp3": "audio/mpeg", "m4a": "audio/mp4", "wav": "audio/wav",
                        "webm": "audio/webm"}
_ENCODE: dict[str, list[str]] = {
    "ogg": ["-c:a", "libopus", "-b:a", "32k", "-ar", "48000", "-f", "ogg"],  # Discord voice messages
    "webm": ["-c:a", "libopus", "-b:a", "32k", "-ar", "48000", "-f", "webm"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "m4a": ["-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", "-f", "ipod"],
}
_MAGIC = ((b"OggS", 0, "ogg"), (b"fLaC", 0, "flac"), (b"ID3", 0, "mp3"), (b"\x1aE\xdf\xa3", 0, "webm"),
          (b"ftyp", 4, "m4a"), (b"WAVE", 8, "wav"))
_DECODE_ERROR = re.compile(r"error while decoding stream|error submitting packet to decoder", re.I)  # per packet
_REPEATED = re.compile(r"Last message repeated (\d+) times")
_REASONS = (  # (ffmpeg says, what the user reads), first match wins
    ("matches no streams", "it has no audio track"),
    ("moov atom not found", "the file is incomplete (truncated upload?)"),
    ("partial file", "the file is incomplete (truncated upload?)"),
    ("Could not seek to", "the file is incomplete (truncated upload?)"),
    ("Invalid data found when processing input", "it is not an audio format I know, or it is damaged"),
)
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples in [-1, 1] at `sample_rate` (16 kHz, what Whisper takes)."""

    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """ffmpeg from PATH, else the static build that the `imageio-ffmpeg` wheel ships."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def probe_duration(data: bytes) -> float:
    """Seconds of audio in `data`, from a stream copy (demuxing only, no decoding: ~0.1 s per hour).

    Raises `UnsupportedInput("audio_unreadable", reason=...)` when ffmpeg cannot read an audio track.
    """
    _check_not_empty(data)
    args = ["-nostats", "-i", "{input}", "-map", "0:a:0", "-c", "copy", "-f", "null", "-progress", "pipe:1", "-"]
    out, err = _ffmpeg(args, data, loglevel="info")
    times = re.findall(rb"out_time_us=(\d+)", out)
    seconds = int(times[-1]) / 1e6 if times else 0.0
    if seconds <= 0:
        header = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", err)
        if header:
            h, m, s = header.groups()
            seconds = int(h) * 3600 + int(m) * 60 + float(s)
    return seconds


def decode(data: bytes, *, max_seconds: float | None = None) -> DecodedAudio:
    """Any container chat platforms send (m4a/mp4, webm, ogg/opus, mp3, wav, flac, ...) as 16 kHz mono.

    The length is probed first, so a recording over `max_seconds` is refused before any decoding:
    `UnsupportedInput("audio_too_long", seconds=, limit=, duration=, max_duration=)`. Empty, truncated,
    corrupt and non-audio input raises `UnsupportedInput("audio_unreadable", reason=...)`.
    """
    duration = probe_duration(data)
    if max_seconds is not None and duration > max_seconds + 0.5:
        raise too_long(duration, max_seconds)
    limit = [] if max_seconds is None else ["-t", f"{max_seconds + 1:.3f}"]
    args = ["-i", "{input}", "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), *limit,
            "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1"]
    out, err = _ffmpeg(args, data, loglevel="warning")  # ffmpeg 7+ logs bad packets as warnings
    samples = np.frombuffer(out, dtype="<f4").astype(np.float32)
    decoded = DecodedAudio(samples)
    errors = decode_errors(err)
    if errors and errors >= max(5.0, decoded.duration_s / 2):  # more than a glitch every 2 s: damaged
        raise UnsupportedInput("audio_unreadable", reason=f"the file is damaged ({errors} decoding errors)")
    if decoded.duration_s < 0.05:
        raise UnsupportedInput("audio_unreadable", reason="it contains no audio")
    if max_seconds is not None and decoded.duration_s > max_seconds + 0.5:  # the container understated it
        raise too_long(decoded.duration_s, max_seconds)
    return decoded


def sniff_format(data: bytes) -> str | None:
    """The container by its magic bytes, when it is one OpenAI's transcription API takes."""
    for magic, at, fmt in _MAGIC:
        if data[at:at + len(magic)] == magic:
            return fmt
    return "mp3" if data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2") else None


def decode_errors(stderr: str) -> int:
    """How many packets ffmpeg could not decode (counting its "Last message repeated N times")."""
    count, last = 0, False
    for line in stderr.splitlines():
        repeated = _REPEATED.search(line)
        if repeated:
            count += int(repeated.group(1)) if last else 0
            continue
        last = bool(_DECODE_ERROR.search(line))
        count += last
    return count


def too_long(seconds: float, limit: float) -> UnsupportedInput:
    return UnsupportedInput("audio_too_long", seconds=round(seconds), limit=round(limit),
                            duration=clock(seconds), max_duration=clock(limit))


def clock(seconds: float) -> str:
    """`1:02:03` or `2:03`."""
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def encode(audio: np.ndarray | bytes, fmt: AudioFormat, *, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Samples (mono float32 at `sample_rate`) or a WAV file as `fmt`: ogg (Opus, what Discord plays as a
    voice message), webm (Opus), mp3, m4a (AAC) or wav."""
    if fmt == "wav":
        if isinstance(audio, bytes):
            if audio[:4] == b"RIFF" and audio[8:12] == b"WAVE":
                return audio
            return wav_bytes(decode(audio).samples, SAMPLE_RATE)
        return wav_bytes(audio, sample_rate)
    if fmt not in _ENCODE:
        raise ValueError(f"cannot encode {fmt!r}; use one of {', '.join(MIME)}")
    if isinstance(audio, bytes):
        source, data = ["-i", "{input}"], audio
    else:
        source = ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", "{input}"]
        data = np.ascontiguousarray(audio, dtype="<f4").tobytes()
    if fmt != "m4a":
        out, _ = _ffmpeg([*source, "-vn", "-ac", "1", *_ENCODE[fmt], "pipe:1"], data, loglevel="error")
        return out
    with tempfile.TemporaryDirectory(prefix="teambot-audio-") as tmp:  # the MP4 muxer must seek back
        target = Path(tmp) / "out.m4a"
        _ffmpeg([*source, "-vn", "-ac", "1", *_ENCODE[fmt], str(target)], data, loglevel="error")
        return target.read_bytes()


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Mono float samples as a 16-bit PCM WAV file."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
    return pcm_wav(pcm.tobytes(), sample_rate)


def pcm_wav(pcm: bytes, sample_rate: int) -> bytes:
    """Mono 16-bit little-endian PCM as a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buffer.getvalue()


def quiet_cuts(samples: np.ndarray, max_samples: int, *, search: float = 0.25, frame: int = 800) -> list[int]:
    """Cut points that split `samples` into pieces of at most `max_samples`, each at the quietest
    moment (lowest energy over ~150 ms) within the last `search` fraction of its window."""
    n = len(samples)
    if n <= max_samples:
        return []
    frames = np.asarray(samples[: n // frame * frame], dtype=np.float32).reshape(-1, frame)
    energy = np.convolve(np.square(frames).mean(axis=1), np.ones(3) / 3, mode="same")
    cuts: list[int] = []
    start = 0
    while n - start > max_samples:
        end = start + max_samples
        lo = -(-(end - int(max_samples * search)) // frame)  # first whole frame in the window
        hi = min(end // frame, len(energy))
        if hi - lo < 1:
            cut = end
        else:
            cut = (lo + int(np.argmin(energy[lo:hi]))) * frame + frame // 2
        cut = min(max(cut, start + 1), end)
        cuts.append(cut)
        start = cut
    return cuts


def speech_chunks(speech: list[tuple[int, int]], samples: np.ndarray, max_samples: int) -> list[tuple[int, int]]:
    """Speech regions (sample ranges) merged into chunks of at most `max_samples`; a region longer than
    that is cut at its quietest moments. The silence between chunks is left out."""
    chunks: list[tuple[int, int]] = []
    for start, end in speech:
        if chunks and end - chunks[-1][0] <= max_samples:
            chunks[-1] = (chunks[-1][0], end)
            continue
        cuts = [start, *(start + c for c in quiet_cuts(samples[start:end], max_samples)), end]
        chunks.extend(itertools.pairwise(cuts))
    return chunks


# -- ffmpeg -------------------------------------------------------------------------------------------
def _ffmpeg(args: list[str], data: bytes, *, loglevel: str) -> tuple[bytes, str]:
    """Run ffmpeg with `data` as "{input}" (stdin, or a temporary file when it must seek); (stdout, stderr)."""
    seek = _needs_seek(data)
    with tempfile.TemporaryDirectory(prefix="teambot-audio-") if seek else contextlib.nullcontext("") as tmp:
        if tmp:
            source = Path(tmp) / "input"
            source.write_bytes(data)
            args = [str(source) if a == "{input}" else a for a in args]
        else:
            args = ["pipe:0" if a == "{input}" else a for a in args]
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", loglevel, "-y", *(["-nostdin"] if tmp else []), *args]
        stdin: dict[str, Any] = {"stdin": subprocess.DEVNULL} if tmp else {"input": data}
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, check=False, **stdin)
        except subprocess.TimeoutExpired:
            raise UnsupportedInput("audio_unreadable", reason="ffmpeg took too long to read it") from None
    err = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0:
        log.debug("ffmpeg exited %d: %s", done.returncode, err[-500:])
        raise UnsupportedInput("audio_unreadable", reason=summarise(err))
    return done.stdout, err


def summarise(stderr: str) -> str:
    """ffmpeg's complaint in a few words."""
    for pattern, reason in _REASONS:
        if pattern in stderr:
            return reason
    lines = [re.sub(r"^(\[[^\]]*\] *)+|^pipe:\d: *", "", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("Input #", "Stream #", "Duration:"))]
    return (lines[-1] if lines else "ffmpeg could not read it").rstrip(".")[:160]


def _check_not_empty(data: bytes) -> None:
    if not data:
        raise UnsupportedInput("audio_unreadable", reason="the file is empty")


def _needs_seek(data: bytes) -> bool:
    """An MP4-family file (ftyp) whose `moov` box is not before its `mdat`: ffmpeg cannot read it from a pipe."""
    if data[4:8] != b"ftyp":
        return False
    at = 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"moov":
            return False
        if kind == b"mdat":
            return True
        if size == 1 and at + 16 <= len(data):
            size = struct.unpack(">Q", data[at + 8:at + 16])[0]
        if size < 8:
            return True
        at += size
    return True
