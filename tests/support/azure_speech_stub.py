"""A loopback stand-in for Azure Speech's text-to-speech REST endpoint (`POST /cognitiveservices/v1`).

    async with AzureSpeechStub(key="test-key") as stub:
        engine = AzureSpeechEngine(endpoint=stub.url)
        stub.fail(429, retry_after=0.1)          # the next request gets a 429, then it answers again
        ...
        call = stub.calls[-1]                    # voice, style, role, text, output_format, ssml

It checks `Ocp-Apim-Subscription-Key`, parses the SSML as Azure does (400 on malformed XML, on a
missing voice or on an output format it does not know) and answers with real audio in the requested
format: a tone of about 60 ms per character, PCM written here, MP3 and Opus encoded by ffmpeg.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import shutil
import subprocess
import wave
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

from aiohttp import web

from tests.support.loopback import LoopbackServer

PATH = "/cognitiveservices/v1"
SSML_NS = "{http://www.w3.org/2001/10/synthesis}"
MSTTS_NS = "{https://www.w3.org/2001/mstts}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
FORMAT = re.compile(r"(?P<family>riff|raw|audio|ogg|webm)-(?P<rate>\d+)(?P<k>k?)hz-(?P<rest>[\w-]+)")


@dataclass
class SpeechCall:
    """One request that passed the key check, as parsed."""

    ssml: str
    output_format: str
    user_agent: str
    content_type: str
    voice: str | None = None
    lang: str | None = None
    style: str | None = None
    role: str | None = None
    rate: str | None = None
    text: str = ""


@dataclass
class Failure:
    status: int
    retry_after: float | None = None


@dataclass
class AzureSpeechStub(LoopbackServer):
    key: str = "test-key"
    seconds_per_char: float = 0.06
    url: str = ""
    calls: list[SpeechCall] = field(default_factory=list)
    attempts: int = 0  # every request, failed ones included
    _failures: deque[Failure] = field(default_factory=deque)
    _runner: web.AppRunner | None = None

    def fail(self, status: int, retry_after: float | None = None, times: int = 1) -> None:
        """Answer the next `times` requests (with the right key) with `status`."""
        self._failures.extend(Failure(status, retry_after) for _ in range(times))

    def tone_seconds(self, text: str) -> float:
        """How long the audio answered for `text` lasts (before codec padding)."""
        return round(min(5.0, max(0.3, len(text) * self.seconds_per_char)), 1)

    async def start(self) -> AzureSpeechStub:
        app = web.Application()
        app.router.add_post(PATH, self._synthesize)
        return await self._serve(app, PATH)

    async def _synthesize(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if request.headers.get("Ocp-Apim-Subscription-Key") != self.key:
            return web.Response(status=401, text="Unauthorized: the subscription key is missing or invalid.")
        if self._failures:
            failure = self._failures.popleft()
            headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
            return web.Response(status=failure.status, headers=headers, text=f"injected {failure.status}")
        ssml = await request.text()
        output_format = request.headers.get("X-Microsoft-OutputFormat", "")
        call = SpeechCall(ssml=ssml, output_format=output_format, user_agent=request.headers.get("User-Agent", ""),
                          content_type=request.headers.get("Content-Type", ""))
        try:
            root = ET.fromstring(ssml)
        except ET.ParseError as e:
            return web.Response(status=400, text=f"SSML is not well-formed XML: {e}")
        voice = root.find(f"{SSML_NS}voice")
        if root.tag != f"{SSML_NS}speak" or voice is None or not voice.get("name"):
            return web.Response(status=400, text="SSML needs <speak> with a <voice name=...>")
        express = voice.find(f".//{MSTTS_NS}express-as")
        prosody = voice.find(f".//{SSML_NS}prosody")
        call.voice, call.lang, call.text = voice.get("name"), root.get(XML_LANG), "".join(voice.itertext())
        call.style = express.get("style") if express is not None else None
        call.role = express.get("role") if express is not None else None
        call.rate = prosody.get("rate") if prosody is not None else None
        self.calls.append(call)
        match = FORMAT.fullmatch(output_format)
        if match is None:
            return web.Response(status=400, text=f"Unsupported output format: {output_format!r}")
        try:
            audio, mime = await asyncio.to_thread(render, match, self.tone_seconds(call.text))
        except ValueError as e:
            return web.Response(status=400, text=str(e))
        return web.Response(body=audio, content_type=mime)


@lru_cache(maxsize=64)
def _render(family: str, rate: int, rest: str, seconds: float) -> tuple[bytes, str]:
    frames = int(rate * seconds)
    pcm = b"".join(int(8000 * math.sin(2 * math.pi * 440 * i / rate)).to_bytes(2, "little", signed=True)
                   for i in range(frames))
    if family == "raw" and rest.endswith("pcm"):
        return pcm, "audio/basic"
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    if family == "riff" and rest.endswith("pcm"):
        return buf.getvalue(), "audio/x-wav"
    if family == "audio" and rest.endswith("mp3"):
        kbit = re.match(r"(\d+)kbitrate", rest)
        args, mime = ["-c:a", "libmp3lame", "-b:a", f"{kbit.group(1) if kbit else 48}k", "-f", "mp3"], "audio/mpeg"
    elif family in ("ogg", "webm") and rest.endswith("opus"):
        args, mime = ["-c:a", "libopus", "-b:a", "32k", "-f", family], f"audio/{family}"
    else:
        raise ValueError(f"Unsupported output format: {family}-{rate}hz-{rest}")
    done = subprocess.run([_ffmpeg(), "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-ar", str(rate), *args,
                           "pipe:1"], input=buf.getvalue(), capture_output=True, timeout=60, check=True)
    return done.stdout, mime


def render(match: re.Match[str], seconds: float) -> tuple[bytes, str]:
    """A tone of `seconds` in the output format that `match` (of `FORMAT`) names, and its MIME type."""
    rate = int(match["rate"]) * (1000 if match["k"] else 1)
    return _render(match["family"], rate, match["rest"], seconds)


def _ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())
