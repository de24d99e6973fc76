"""The `presenter` engine on D-ID's talks API, falling back to the local renderer when D-ID is down.

One job: upload the portrait (`POST /images`) and the audio (`POST /audios`), create a talk
(`POST /talks` with the two `s3://` urls D-ID answered), poll `GET /talks/{id}` until it is "done"
(the poll interval grows a little each time), then download `result_url` (a pre-signed link: a
plain GET, never with the key). 429 and 5xx answers are retried with backoff honouring
`Retry-After`; so are connection errors.

Errors (all `PresenterError`, key `presenter_did_*`): 401/403 -> `did_auth`; a talk that ends in
"error" or "rejected", or any other 4xx (a portrait D-ID refuses, no credits) -> `did_failed` with
D-ID's description; connection errors, timeouts and 429/5xx after the retries -> `did_unreachable`;
no result within `timeout_s` -> `did_failed` ("no video after N s"). Unreachable and timed out are an
outage: with `fallback_local` the job is rendered by `LocalPresenterEngine` in a thread instead, a WARNING is
logged and `Video.note` says so. Auth errors and refused jobs never fall back: they need an operator
(or another portrait), and rendering locally would hide that.

The API key is read from `api_key_env` at load and is never logged (nor are the pre-signed links).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from bot.errors import EngineUnavailable, UnsupportedInput, UserFacingError
from engines.base import EngineRequest
from engines.presenter import LocalPresenterEngine, PresenterError, PresentRequest, Video, default_portrait

log = logging.getLogger(__name__)

_Answer = tuple[int, Any, str | None]  # status, parsed body, Retry-After
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_IMAGE_MAGIC = ((b"\xff\xd8\xff", "image/jpeg", "portrait.jpg"), (b"\x89PNG\r\n\x1a\n", "image/png", "portrait.png"))
_AUDIO_TYPES = {"mp3": ("audio/mpeg", "answer.mp3"), "wav": ("audio/wav", "answer.wav"),
                "m4a": ("audio/mp4", "answer.m4a")}  # what D-ID takes; anything else is sent as mp3


class DIDError(PresenterError):
    """D-ID failed; `outage` marks failures that are D-ID's (unreachable, 5xx, timeout): those may fall back."""

    def __init__(self, code: str, *, outage: bool = False, reason: str = "", **params: Any) -> None:
        super().__init__(code, **params)
        self.outage = outage
        self.reason = reason or code  # for the log and the fallback note; never shown with a key in it


@dataclass
class _Talk:
    """What the poll loop learned: the result link and D-ID's own duration of it."""

    result_url: str
    duration: float | None


class DIDPresenterEngine:
    """The `presenter` engine on D-ID (https://docs.d-id.com): a talking head from a portrait and audio.

    `poll_s` is the first poll interval (it grows by `poll_growth` up to `max_poll_s`), `timeout_s` the
    whole job's limit (uploads to download), `request_timeout_s` one HTTP request's. `local_options`
    are passed to `LocalPresenterEngine` when it is built for a fallback (or for the default portrait).
    """

    name = "presenter"

    def __init__(self, base_url: str = "https://api.d-id.com", api_key_env: str = "DID_API_KEY",
                 poll_s: float = 1.0, timeout_s: float = 300, max_retries: int = 3, fallback_local: bool = True,
                 backoff_s: float = 0.5, max_retry_wait_s: float = 10.0, request_timeout_s: float = 60.0,
                 poll_growth: float = 1.2, max_poll_s: float = 5.0, result_format: str = "mp4",
                 local_options: dict[str, Any] | None = None, memory_mb: int = 0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.poll_s, self.poll_growth, self.max_poll_s = poll_s, max(1.0, poll_growth), max(poll_s, max_poll_s)
        self.timeout_s, self.request_timeout_s = timeout_s, request_timeout_s
        self.max_retries, self.backoff_s, self.max_retry_wait_s = max(0, max_retries), backoff_s, max_retry_wait_s
        self.fallback_local = fallback_local
        self.result_format = result_format
        self.local_options = dict(local_options or {})
        self.memory_mb = memory_mb  # a remote service: the fallback's memory is the local engine's own
        self._key: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._local: LocalPresenterEngine | None = None
        self._local_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def load(self) -> None:
        self._key = os.environ.get(self.api_key_env, "").strip() or None
        if not self._key:
            raise EngineUnavailable(f"set {self.api_key_env} in the environment to use D-ID")

    async def unload(self) -> None:
        """Forget the key and close the HTTP session (the pool awaits a coroutine `unload`)."""
        self._key = None
        http, self._http = self._http, None
        if http is not None and not http.closed:
            await http.close()
        local, self._local = self._local, None
        if local is not None:
            await asyncio.to_thread(local.unload)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(headers={"User-Agent": "teambot", "Accept": "application/json"})
        return self._http

    # -- jobs ------------------------------------------------------------------------------------------------------

    async def run(self, batch: list[EngineRequest]) -> list[Any]:
        if self._key is None:
            self.load()
        return list(await asyncio.gather(*(self._job(r) for r in batch), return_exceptions=True))

    async def _job(self, request: EngineRequest) -> Video:
        payload = request.payload
        if not isinstance(payload, PresentRequest):
            raise TypeError(f"presenter engine takes PresentRequest, not {type(payload).__name__}")
        if not payload.audio:
            raise UnsupportedInput("audio_unreadable", reason="it contains no audio")
        try:
            return await self.present(payload, request)
        except DIDError as e:
            if not (e.outage and self.fallback_local):
                raise
            log.warning("D-ID unavailable (%s); rendering job %s locally", e.reason, request.job_id or "-")
            video = await self._render_locally(request)
            note = f"D-ID was unavailable ({e.reason}); rendered locally"
            return replace(video, note=f"{note}. {video.note}" if video.note else note)

    async def present(self, payload: PresentRequest, request: EngineRequest) -> Video:
        """Render `payload` on D-ID (no fallback here); raises `DIDError`."""
        deadline = time.monotonic() + self.timeout_s
        request.progress(0.02, "D-ID: uploading")
        portrait = payload.portrait if payload.portrait is not None else await self._default_portrait()
        image_type, image_name, image = await asyncio.to_thread(_as_jpeg_or_png, portrait)
        audio_type, audio_name, audio = await asyncio.to_thread(_as_did_audio, payload.audio)
        image_url = await self._upload("/images", "image", image, image_name, image_type, request, deadline)
        audio_url = await self._upload("/audios", "audio", audio, audio_name, audio_type, request, deadline)
        request.progress(0.1, "D-ID: queued")
        body = {"source_url": image_url, "script": {"type": "audio", "audio_url": audio_url},
                "config": {"result_format": self.result_format}}
        created = await self._api("POST", "/talks", request, deadline, payload=body)
        talk_id = str(created.get("id") or "")
        if not talk_id:
            raise DIDError("did_unreachable", outage=True, reason="D-ID answered a talk without an id")
        log.info("D-ID talk %s created", talk_id)
        try:
            talk = await self._wait(talk_id, request, deadline)
        except DIDError as e:
            if e.code == "did_failed" and e.outage:  # timed out: D-ID need not finish (nor bill) it
                await self._delete(talk_id)
            raise
        request.progress(0.92, "D-ID: downloading")
        data = await self._download(talk.result_url, request, deadline)
        request.progress(0.98, "D-ID: checking the video")
        width, height, fps, duration = await asyncio.to_thread(probe_video, data)
        if duration <= 0:
            duration = talk.duration or 0.0
        if len(data) > payload.max_bytes:
            data, width, height = await asyncio.to_thread(shrink, data, payload.max_bytes, duration, height)
        request.progress(1.0, "D-ID: done")
        return Video(data=data, duration_s=duration, width=width or payload.size, height=height or payload.size,
                     fps=fps or float(payload.fps), renderer="d-id")

    async def _wait(self, talk_id: str, request: EngineRequest, deadline: float) -> _Talk:
        interval, started = self.poll_s, time.monotonic()
        while True:
            if request.cancelled():
                await self._delete(talk_id)
                raise UserFacingError("job_cancelled")
            left = deadline - time.monotonic()
            if left <= 0:
                raise _timed_out(self.timeout_s)
            await asyncio.sleep(min(interval, left))
            interval = min(interval * self.poll_growth, self.max_poll_s)
            talk = await self._api("GET", f"/talks/{talk_id}", request, deadline)
            status = str(talk.get("status") or "")
            if status == "done":
                url = talk.get("result_url")
                if not url:
                    raise DIDError("did_unreachable", outage=True, reason="D-ID finished a talk without a result")
                duration = talk.get("duration")
                return _Talk(str(url), float(duration) if isinstance(duration, int | float) else None)
            if status in ("error", "rejected"):
                error = talk.get("error") if isinstance(talk.get("error"), dict) else {}
                description = _describe(error) or ("D-ID rejected the job" if status == "rejected" else "unknown")
                log.info("D-ID talk %s ended in %s: %s", talk_id, status, description)
                raise DIDError("did_failed", reason=f"talk {status}", description=description)
            elapsed = time.monotonic() - started
            if status == "started":  # no percentage from D-ID: approach 0.9 (half way after ~15 s)
                request.progress(0.2 + 0.7 * (1 - 0.5 ** (elapsed / 15)), "D-ID: rendering")
            else:
                request.progress(0.15, "D-ID: waiting in the queue")

    # -- HTTP ------------------------------------------------------------------------------------------------------

    async def _upload(self, path: str, field: str, data: bytes, filename: str, content_type: str,
                      request: EngineRequest, deadline: float) -> str:
        def form() -> aiohttp.FormData:  # a FormData can be sent once: one per attempt
            f = aiohttp.FormData()
            f.add_field(field, data, filename=filename, content_type=content_type)
            return f

        answer = await self._api("POST", path, request, deadline, form=form)
        url = answer.get("url")
        if not url:
            raise DIDError("did_unreachable", outage=True, reason=f"D-ID answered {path} without a url")
        return str(url)

    async def _api(self, method: str, path: str, request: EngineRequest, deadline: float, *,
                   payload: dict[str, Any] | None = None, form: Callable[[], aiohttp.FormData] | None = None
                   ) -> dict[str, Any]:
        headers = {"Authorization": f"Basic {self._key or ''}"}
        label = f"{method} {path.split('/tlk_')[0]}"

        async def attempt(http: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout) -> _Answer:
            async with http.request(method, self.base_url + path, headers=headers, json=payload,
                                    data=form() if form else None, timeout=timeout) as resp:
                if resp.status < 300:
                    try:
                        return resp.status, await resp.json(content_type=None), None
                    except ValueError:  # not JSON: D-ID's edge answering for it, treated as an outage
                        return resp.status, None, None
                return resp.status, await _error_body(resp), resp.headers.get("Retry-After")

        status, body = await self._retrying(label, request, deadline, attempt)
        if status < 300:
            if not isinstance(body, dict):
                raise DIDError("did_unreachable", outage=True, reason=f"{label} answered {type(body).__name__}")
            return body
        raise _status_error(status, body, label)

    async def _download(self, url: str, request: EngineRequest, deadline: float) -> bytes:
        async def attempt(http: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout) -> _Answer:
            # A fresh request without the session's key header: the link is pre-signed (and on S3).
            async with http.get(url, timeout=timeout, headers={"Accept": "*/*"}) as resp:
                if resp.status < 300:
                    return resp.status, await resp.read(), None
                return resp.status, {"description": f"status {resp.status}"}, resp.headers.get("Retry-After")

        status, body = await self._retrying("GET result", request, deadline, attempt)
        if status < 300 and isinstance(body, bytes) and body:
            return body
        raise DIDError("did_unreachable", outage=True, reason=f"the result download failed (status {status})")

    async def _retrying(self, label: str, request: EngineRequest, deadline: float,
                        attempt: Callable[[aiohttp.ClientSession, aiohttp.ClientTimeout], Awaitable[_Answer]]
                        ) -> tuple[int, Any]:
        """`attempt` up to 1 + max_retries times while it fails with 429/5xx or a connection error."""
        for n in range(self.max_retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise _timed_out(self.timeout_s)
            timeout = aiohttp.ClientTimeout(total=min(self.request_timeout_s, left), sock_connect=min(10.0, left))
            wait = self.backoff_s * 2**n
            try:
                status, body, retry_after = await attempt(self._session(), timeout)
                if status not in _RETRY_STATUS or n == self.max_retries:
                    return status, body
                wait = _retry_after(retry_after) or wait
                log.info("D-ID %s: status %d, retry %d in %.1f s", label, status, n + 1, wait)
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                what = _connection_reason(e)
                if n == self.max_retries:
                    raise DIDError("did_unreachable", outage=True, reason=what) from e
                log.info("D-ID %s: %s, retry %d in %.1f s", label, what, n + 1, wait)
            if request.cancelled():
                raise UserFacingError("job_cancelled")
            await asyncio.sleep(max(0.0, min(wait, self.max_retry_wait_s, deadline - time.monotonic())))
        raise AssertionError("unreachable")

    async def _delete(self, talk_id: str) -> None:
        """Best effort: ask D-ID to drop a talk we no longer wait for."""
        try:
            async with self._session().delete(f"{self.base_url}/talks/{talk_id}",
                                              headers={"Authorization": f"Basic {self._key or ''}"},
                                              timeout=aiohttp.ClientTimeout(total=5)) as resp:
                log.info("D-ID talk %s deleted (status %d)", talk_id, resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.info("D-ID talk %s not deleted: %s", talk_id, type(e).__name__)

    # -- the local renderer ----------------------------------------------------------------------------------------

    def _local_engine(self) -> LocalPresenterEngine:
        with self._local_lock:  # fallbacks of one batch run in parallel threads: build it once
            if self._local is None:
                local = LocalPresenterEngine(**self.local_options)
                local.load()
                self._local = local
            return self._local

    async def _default_portrait(self) -> bytes:
        """The local renderer's default: its `portrait` option when set, else the bundled one."""
        path = self.local_options.get("portrait")
        return await asyncio.to_thread(Path(path).read_bytes) if path else default_portrait()

    async def _render_locally(self, request: EngineRequest) -> Video:
        def render() -> Any:
            [result] = self._local_engine().run([request])
            return result

        result = await asyncio.to_thread(render)
        if isinstance(result, BaseException):
            raise result
        if not isinstance(result, Video):
            raise TypeError(f"the local presenter returned {type(result).__name__}")
        return result


# -- helpers -----------------------------------------------------------------------------------------------------


def _timed_out(seconds: float) -> DIDError:
    return DIDError("did_failed", outage=True, reason=f"no video after {seconds:g} s",
                    description=f"no video after {seconds:g} s")


def _describe(error: Any) -> str:
    """D-ID's `{"kind", "description"}` as "Kind: description"."""
    if not isinstance(error, dict):
        return " ".join(str(error).split())[:300] if error else ""
    kind, description = str(error.get("kind") or ""), str(error.get("description") or error.get("message") or "")
    text = f"{kind}: {description}" if kind and description and kind not in description else description or kind
    return " ".join(text.split())[:300]


async def _error_body(resp: aiohttp.ClientResponse) -> Any:
    text = await resp.text(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return {"description": " ".join(text.split())[:300]}


def _status_error(status: int, body: Any, label: str) -> DIDError:
    if status in (401, 403):
        return DIDError("did_auth", reason=f"status {status}", status=status)
    if status in _RETRY_STATUS:
        return DIDError("did_unreachable", outage=True, reason=f"{label}: status {status}", status=status)
    description = _describe(body) or f"status {status}"
    return DIDError("did_failed", reason=f"{label}: status {status}", status=status, description=description)


def _connection_reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "no answer in time"
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"cannot connect: {e.os_error.strerror or type(e.os_error).__name__}"
    return type(e).__name__


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _as_jpeg_or_png(data: bytes) -> tuple[str, str, bytes]:
    """The portrait as D-ID takes it (JPEG or PNG): (content type, file name, bytes); others go through Pillow."""
    for magic, content_type, name in _IMAGE_MAGIC:
        if data.startswith(magic):
            return content_type, name, data
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            out = io.BytesIO()
            image.convert("RGB").save(out, "PNG")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise PresenterError("bad_image") from e
    return "image/png", "portrait.png", out.getvalue()


def _as_did_audio(data: bytes) -> tuple[str, str, bytes]:
    """The audio as D-ID takes it (mp3, wav or m4a): (content type, file name, bytes)."""
    from engines.audio import encode, sniff_format

    fmt = sniff_format(data)
    if fmt in _AUDIO_TYPES:
        return (*_AUDIO_TYPES[fmt], data)
    return (*_AUDIO_TYPES["mp3"], encode(data, "mp3"))


def _run_ffmpeg(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    from engines.audio import ffmpeg_exe

    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args], capture_output=True, timeout=timeout,
                          check=False)


def probe_video(data: bytes) -> tuple[int, int, float, float]:
    """(width, height, fps, seconds) of an MP4 from ffmpeg's header dump (no decoding); zeros when unknown."""
    with tempfile.TemporaryDirectory(prefix="teambot-did-") as tmp:  # an MP4 index may sit at the end: seekable
        path = Path(tmp) / "in.mp4"
        path.write_bytes(data)
        err = _run_ffmpeg(["-i", str(path)], timeout=30).stderr.decode("utf-8", "replace")
    header = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", err)
    seconds = int(header[1]) * 3600 + int(header[2]) * 60 + float(header[3]) if header else 0.0
    stream = re.search(r"Stream #.*Video:.*?(\d{2,5})x(\d{2,5})", err)
    fps = re.search(r"Stream #.*Video:.*?([\d.]+) (?:fps|tbr)", err)
    return (int(stream[1]) if stream else 0, int(stream[2]) if stream else 0, float(fps[1]) if fps else 0.0,
            round(seconds, 3))


def shrink(data: bytes, max_bytes: int, duration: float, height: int) -> tuple[bytes, int, int]:
    """Re-encode an MP4 at the bitrate that fits `max_bytes` (smaller when that bitrate is too low for its
    size), a few times with a wider margin; (bytes, width, height). Raises `PresenterError("too_large")`."""
    from engines.presenter import MIN_HEIGHT, MIN_VIDEO_KBPS, _video_args, video_encoder

    encoder, margin, size = video_encoder(), 0.9, len(data)
    with tempfile.TemporaryDirectory(prefix="teambot-did-") as tmp:
        source = Path(tmp) / "in.mp4"
        source.write_bytes(data)
        for attempt in range(4):
            budget = max_bytes * 8 / 1000 / max(duration, 0.1) * margin - 4  # kbit/s, less the MP4 overhead
            audio_kbps = 48 if budget >= 240 else 32 if budget >= 120 else 24
            video_kbps = int(budget - audio_kbps)
            if video_kbps < MIN_VIDEO_KBPS:
                break
            new_h = max(MIN_HEIGHT, min(height or 480, 480 if video_kbps < 600 else 720) // 2 * 2)
            target = Path(tmp) / f"fit{attempt}.mp4"
            done = _run_ffmpeg(["-loglevel", "error", "-y", "-i", str(source), "-vf", f"scale=-2:{new_h}",
                                *_video_args(encoder, "veryfast", 23, video_kbps), "-c:a", "aac",
                                "-b:a", f"{audio_kbps}k", "-ac", "1", "-movflags", "+faststart", str(target)],
                               timeout=600)
            if done.returncode != 0 or not target.is_file():
                break
            size = target.stat().st_size
            if size <= max_bytes:
                smaller = target.read_bytes()
                width, new_height, _, _ = probe_video(smaller)
                return smaller, width, new_height
            margin *= 0.8 * max_bytes / size
    raise PresenterError("too_large", size_mb=round(size / 2**20, 2), limit_mb=round(max_bytes / 2**20, 2),
                         duration=round(duration, 1))
