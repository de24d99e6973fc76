"""libespeak-ng through ctypes (the copy `espeakng-loader` ships): every language, with phoneme events.

The library is process-global, so one initialised instance is shared, guarded by a lock."""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from typing import Any

from bot.errors import EngineUnavailable
from engines.speech_types import Phoneme

log = logging.getLogger(__name__)

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
