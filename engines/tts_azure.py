"""Azure Speech text to speech over its REST API (see engines/tts.py for why not the SDK)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import struct
import wave
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import aiohttp

from bot.errors import EngineUnavailable, UserFacingError
from engines.base import EngineRequest
from engines.speech_types import (
    MIME,
    SpeakRequest,
    Speech,
    SpeechServiceError,
    _checked,
    _lang_tag,
    detect_language,
    encode_audio,
)

log = logging.getLogger(__name__)

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

