"""A loopback stand-in for D-ID's talks API (`/images`, `/audios`, `/talks`), with real MP4 results.

    async with DIDStub(key="test-key") as stub:
        engine = DIDPresenterEngine(base_url=stub.url, ...)
        stub.polls_until_done = 4                        # created, started, started, done
        stub.fail_next_talk = "FaceError: no face detected"   # the next talk ends in status "error"
        stub.fail_next("POST", "/talks", status=500, times=2)  # or "/talks/{id}", or a concrete path
        ...
        stub.requests[-1]                               # method, path, body, authorized, status answered

It speaks D-ID's protocol: `Authorization: Basic <key>` on every API route (401 `AuthorizationError`
otherwise); multipart uploads (`image` to /images, `audio` to /audios) are checked to be non-empty and
of the right kind by their bytes (400 `ValidationError`) and answered with `{"id", "url"}` where the
url is an `s3://` address that only /talks understands; `POST /talks` takes `source_url`,
`script: {"type": "audio", "audio_url"}` and answers 201 `{"id": "tlk_...", "status": "created"}`;
each `GET /talks/{id}` is one poll, and the poll numbered `polls_until_done` (1-based) answers
"done" with `result_url` and `duration`. The result is an MP4 made by ffmpeg from the uploaded image
and audio, served without auth at `/results/{id}.mp4` (like D-ID's pre-signed S3 links). The key
itself is never stored in `requests`.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.loopback import LoopbackServer

JSON = dict[str, Any]
Handler = Callable[[web.Request, "Recorded"], Awaitable[web.Response]]
IMAGE_MAGIC = ((b"\xff\xd8\xff", 0, "jpeg"), (b"\x89PNG\r\n\x1a\n", 0, "png"))
AUDIO_MAGIC = ((b"RIFF", 0, "wav"), (b"ID3", 0, "mp3"), (b"\xff\xfb", 0, "mp3"), (b"\xff\xf3", 0, "mp3"),
               (b"ftyp", 4, "m4a"), (b"OggS", 0, "ogg"), (b"fLaC", 0, "flac"))


@dataclass
class Recorded:
    """One request as the stand-in saw it; `headers` never include Authorization."""

    method: str
    path: str
    route: str  # the route template, e.g. "/talks/{id}"
    body: Any  # parsed JSON, {field: {"filename", "content_type", "size"}} for multipart, or None
    headers: dict[str, str]
    authorized: bool  # whether an Authorization header was sent at all
    status: int = 0  # what the stand-in answered


@dataclass
class Upload:
    id: str
    url: str
    filename: str
    content_type: str
    kind: str  # jpeg/png or wav/mp3/...
    data: bytes


@dataclass
class Talk:
    id: str
    image: Upload
    audio: Upload
    body: JSON
    created_at: float
    polls: int = 0
    status: str = "created"
    failure: str | None = None  # "Kind: description" when the talk is to fail
    fail_status: str = "error"
    video: bytes | None = None
    duration: float | None = None


@dataclass
class Injected:
    method: str
    path: str
    status: int
    retry_after: float | None
    body: JSON | None
    times: int


@dataclass
class DIDStub(LoopbackServer):
    key: str = "test-key"
    polls_until_done: int = 2
    fail_next_talk: str | None = None  # "Kind: description": the next talk created ends in `fail_status`
    fail_status: str = "error"  # or "rejected" (D-ID's moderation)
    video_height: int = 128  # of the rendered result (small: quick to make)
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    images: dict[str, Upload] = field(default_factory=dict)
    audios: dict[str, Upload] = field(default_factory=dict)
    talks: dict[str, Talk] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    _injected: deque[Injected] = field(default_factory=deque)
    _runner: web.AppRunner | None = None

    # -- test controls --------------------------------------------------------------------------------------------

    def fail_next(self, method: str, path: str, status: int = 500, times: int = 1, retry_after: float | None = None,
                  body: JSON | None = None) -> None:
        """Answer the next `times` requests to `method path` (a concrete path or a route template such as
        "/talks/{id}") with `status` and a D-ID-style error body, after the key check."""
        self._injected.append(Injected(method.upper(), path, status, retry_after, body, times))

    def calls(self, method: str, route: str) -> list[Recorded]:
        """The recorded requests to one route template, e.g. `calls("GET", "/talks/{id}")`."""
        return [r for r in self.requests if r.method == method.upper() and r.route == route]

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> DIDStub:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/images", self._route(self._upload_image))
        app.router.add_post("/audios", self._route(self._upload_audio))
        app.router.add_post("/talks", self._route(self._create_talk))
        app.router.add_get("/talks/{id}", self._route(self._get_talk))
        app.router.add_delete("/talks/{id}", self._route(self._delete_talk))
        app.router.add_get("/results/{name}", self._route(self._result))
        return await self._serve(app)

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _route(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """`handler` behind the recording, the key check (except for result links) and injected failures."""

        async def route(request: web.Request) -> web.StreamResponse:
            resource = request.match_info.route.resource
            template = resource.canonical if resource is not None else request.path
            headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"}
            record = Recorded(request.method, request.path, template, None, headers,
                              "Authorization" in request.headers)
            self.requests.append(record)
            if not template.startswith("/results/"):
                if request.headers.get("Authorization", "") != f"Basic {self.key}":
                    return self._answer(record, _error(401, "AuthorizationError", "Unauthorized"))
            injected = self._take_injected(request.method, request.path, template)
            if injected is not None:
                kind = ("InternalServerError" if injected.status >= 500 else
                        "TooManyRequestsError" if injected.status == 429 else "Error")
                body = injected.body or {"kind": kind, "description": f"injected {injected.status}"}
                extra = {} if injected.retry_after is None else {"Retry-After": f"{injected.retry_after:g}"}
                return self._answer(record, web.json_response(body, status=injected.status, headers=extra))
            return self._answer(record, await handler(request, record))

        return route

    @staticmethod
    def _answer(record: Recorded, response: web.StreamResponse) -> web.StreamResponse:
        record.status = response.status
        return response

    def _take_injected(self, method: str, path: str, route: str) -> Injected | None:
        for injected in self._injected:
            if injected.method == method and injected.path in (path, route):
                injected.times -= 1
                if injected.times <= 0:
                    self._injected.remove(injected)
                return injected
        return None

    async def _read_upload(self, request: web.Request, record: Recorded, name: str,
                           magic: tuple[tuple[bytes, int, str], ...], kind: str) -> Upload | web.Response:
        if not request.content_type.startswith("multipart/"):
            return _error(400, "ValidationError", f"expected multipart/form-data with a '{name}' file")
        form = await request.post()
        record.body = {k: {"filename": v.filename, "content_type": v.content_type, "size": len(v.file.read())}
                       if isinstance(v, web.FileField) else v for k, v in form.items()}
        upload = form.get(name)
        if not isinstance(upload, web.FileField):
            return _error(400, "ValidationError", f'"{name}" is required')
        upload.file.seek(0)
        data = upload.file.read()
        if not data:
            return _error(400, "ValidationError", f'"{name}" is empty')
        found = next((fmt for m, at, fmt in magic if data[at:at + len(m)] == m), None)
        if found is None or not (upload.content_type or "").startswith(f"{kind}/"):
            return _error(400, "ValidationError", f'"{name}" must be an {kind} file ({upload.content_type})')
        prefix = "img" if kind == "image" else "aud"
        upload_id = f"{prefix}_{uuid.uuid4().hex[:16]}"
        url = f"s3://d-id-{kind}s-prod/stub/{upload_id}/{upload.filename or name}"
        return Upload(upload_id, url, upload.filename or name, upload.content_type, found, data)

    # -- routes ---------------------------------------------------------------------------------------------------

    async def _upload_image(self, request: web.Request, record: Recorded) -> web.Response:
        upload = await self._read_upload(request, record, "image", IMAGE_MAGIC, "image")
        if isinstance(upload, web.Response):
            return upload
        self.images[upload.url] = upload
        return web.json_response({"id": upload.id, "url": upload.url}, status=201)

    async def _upload_audio(self, request: web.Request, record: Recorded) -> web.Response:
        upload = await self._read_upload(request, record, "audio", AUDIO_MAGIC, "audio")
        if isinstance(upload, web.Response):
            return upload
        self.audios[upload.url] = upload
        return web.json_response({"id": upload.id, "url": upload.url, "moderation_metadata": {}}, status=201)

    async def _create_talk(self, request: web.Request, record: Recorded) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "ValidationError", "the body is not JSON")
        record.body = body
        if not isinstance(body, dict):
            return _error(400, "ValidationError", "the body must be a JSON object")
        script = body.get("script")
        if not isinstance(script, dict) or script.get("type") != "audio" or not script.get("audio_url"):
            return _error(400, "ValidationError", '"script" must be {"type": "audio", "audio_url": ...}')
        image = self.images.get(str(body.get("source_url")))
        audio = self.audios.get(str(script["audio_url"]))
        if image is None:
            return _error(400, "ValidationError", f'"source_url" is not an uploaded image: {body.get("source_url")}')
        if audio is None:
            return _error(400, "ValidationError", f'"audio_url" is not an uploaded audio: {script["audio_url"]}')
        result_format = (body.get("config") or {}).get("result_format", "mp4")
        if result_format not in ("mp4", "gif", "mov"):
            return _error(400, "ValidationError", '"config.result_format" must be mp4, gif or mov')
        talk = Talk(f"tlk_{uuid.uuid4().hex[:20]}", image, audio, body, time.time(), failure=self.fail_next_talk,
                    fail_status=self.fail_status)
        self.fail_next_talk = None
        self.talks[talk.id] = talk
        return web.json_response({"id": talk.id, "object": "talk", "created_by": "stub", "status": "created",
                                  "created_at": _iso(talk.created_at)}, status=201)

    async def _get_talk(self, request: web.Request, record: Recorded) -> web.Response:
        talk = self.talks.get(request.match_info["id"])
        if talk is None:
            return _error(404, "NotFoundError", "talk not found")
        if talk.status not in ("done", "error", "rejected"):
            talk.polls += 1
            if talk.polls >= self.polls_until_done:
                if talk.failure is not None:
                    talk.status = talk.fail_status
                else:
                    talk.video, talk.duration = await asyncio.to_thread(
                        render_mp4, talk.image.data, talk.image.kind, talk.audio.data, talk.audio.kind,
                        self.video_height)
                    talk.status = "done"
            else:
                talk.status = "created" if talk.polls == 1 else "started"
        answer: JSON = {"id": talk.id, "object": "talk", "status": talk.status, "source_url": talk.image.url,
                        "audio_url": talk.audio.url, "config": talk.body.get("config") or {},
                        "created_at": _iso(talk.created_at)}
        if talk.status in ("started", "done"):
            answer["started_at"] = _iso(talk.created_at)
        if talk.status == "done":
            answer["result_url"] = f"{self.url}/results/{talk.id}.mp4?AWSAccessKeyId=stub&Signature=stub"
            answer["duration"] = talk.duration
        if talk.status in ("error", "rejected"):
            kind, _, description = (talk.failure or "UnknownError: failed").partition(": ")
            answer["error"] = {"kind": kind, "description": description or kind}
        return web.json_response(answer)

    async def _delete_talk(self, request: web.Request, record: Recorded) -> web.Response:
        talk = self.talks.pop(request.match_info["id"], None)
        if talk is None:
            return _error(404, "NotFoundError", "talk not found")
        self.deleted.append(talk.id)
        return web.json_response({"deleted": 1})

    async def _result(self, request: web.Request, record: Recorded) -> web.Response:
        match = re.fullmatch(r"(tlk_\w+)\.mp4", request.match_info["name"])
        talk = self.talks.get(match.group(1)) if match else None
        if talk is None or talk.video is None:
            return web.Response(status=404, text="NoSuchKey")  # S3 answers XML; the body does not matter
        return web.Response(body=talk.video, content_type="video/mp4")


def _error(status: int, kind: str, description: str) -> web.Response:
    return web.json_response({"kind": kind, "description": description}, status=status)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


def render_mp4(image: bytes, image_kind: str, audio: bytes, audio_kind: str, height: int = 128) -> tuple[bytes, float]:
    """A small MP4 (MPEG-4 video, AAC audio) of the still `image` for as long as `audio` lasts, and its length."""
    with tempfile.TemporaryDirectory(prefix="did-stub-") as tmp:
        img, aud, out = Path(tmp) / f"image.{image_kind}", Path(tmp) / f"audio.{audio_kind}", Path(tmp) / "out.mp4"
        img.write_bytes(image)
        aud.write_bytes(audio)
        subprocess.run([_ffmpeg(), "-nostdin", "-loglevel", "error", "-y", "-loop", "1", "-framerate", "25",
                        "-i", str(img), "-i", str(aud), "-shortest", "-vf", f"scale=-2:{height},format=yuv420p",
                        "-c:v", "mpeg4", "-q:v", "8", "-c:a", "aac", "-b:a", "48k", "-movflags", "+faststart",
                        str(out)], capture_output=True, timeout=60, check=True)
        probe = subprocess.run([_ffmpeg(), "-hide_banner", "-nostdin", "-i", str(out)], capture_output=True,
                               timeout=30, check=False)
        header = re.search(rb"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", probe.stderr)
        duration = int(header[1]) * 3600 + int(header[2]) * 60 + float(header[3]) if header else 0.0
        return out.read_bytes(), round(duration, 3)


def _ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())
