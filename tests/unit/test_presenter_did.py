"""`DIDPresenterEngine` against the loopback stand-in of D-ID's talks API (tests/support/did_stub.py).

Outages (connection refused, 5xx after the retries, no result in time) fall back to the local renderer;
the tests keep those videos tiny (128 px, 10 fps, 1.5 s of audio).
"""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from bot.errors import EngineUnavailable, UserFacingError
from bot.messages import t
from engines.audio import wav_bytes
from engines.base import EngineRequest
from engines.presenter import PresenterError, PresentRequest, Video, default_portrait
from engines.presenter_did import DIDPresenterEngine, probe_video
from tests.support.did_stub import DIDStub, render_mp4

KEY = "did-SECRET-key-4b1d9e"
KEY_ENV = "TEST_DID_API_KEY"
SECONDS = 1.5
SMALL: dict[str, Any] = {"size": 128, "fps": 10}
MADE: list[DIDPresenterEngine] = []  # unloaded after each test, also when it fails


@pytest_asyncio.fixture(loop_scope="session")
async def stub() -> AsyncIterator[DIDStub]:
    async with DIDStub(key=KEY) as server:
        yield server


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def log_everything_and_unload(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    while MADE:
        await MADE.pop().unload()


def tone(seconds: float = SECONDS) -> bytes:
    t_ = np.arange(int(16000 * seconds)) / 16000
    return wav_bytes((0.3 * np.sin(2 * np.pi * 220 * t_)).astype(np.float32))


def png(width: int = 160, height: int = 200) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (190, 150, 120)).save(out, "PNG")
    return out.getvalue()


AUDIO = tone()
PORTRAIT = png()


def make_engine(stub: DIDStub, monkeypatch: pytest.MonkeyPatch, key: str = KEY, **options: Any) -> DIDPresenterEngine:
    monkeypatch.setenv(KEY_ENV, key)
    settings: dict[str, Any] = {"base_url": stub.url, "api_key_env": KEY_ENV, "poll_s": 0.02, "max_poll_s": 0.05,
                                "backoff_s": 0.01, "timeout_s": 20, **options}
    engine = DIDPresenterEngine(**settings)
    engine.load()
    MADE.append(engine)
    return engine


async def present(engine: DIDPresenterEngine, progress: list[tuple[float, str]] | None = None,
                  **request: Any) -> Video:
    payload = PresentRequest(**{"audio": AUDIO, "portrait": PORTRAIT, **SMALL, **request})
    notes = progress if progress is not None else []
    [result] = await engine.run([EngineRequest(payload, progress=lambda f, n: notes.append((f, n)))])
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, Video)
    return result


def closed_port_url() -> str:
    with socket.socket() as s:  # bound, never listening, then closed: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("engines")]


# -- D-ID answers --------------------------------------------------------------------------------------------------


async def test_renders_on_did(stub: DIDStub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(stub, monkeypatch)
    video = await present(engine, text="Hello there")
    assert video.data[4:8] == b"ftyp" and video.mime == "video/mp4"
    assert (video.renderer, video.note) == ("d-id", None)
    assert abs(video.duration_s - SECONDS) < 0.2
    assert (video.height, video.fps) == (stub.video_height, 25.0) and video.width > 0
    assert probe_video(video.data)[3] == pytest.approx(video.duration_s)
    [image] = stub.calls("POST", "/images")
    [audio] = stub.calls("POST", "/audios")
    assert image.body["image"]["content_type"] == "image/png" and image.body["image"]["size"] == len(PORTRAIT)
    assert audio.body["audio"]["content_type"] == "audio/wav" and audio.body["audio"]["size"] == len(AUDIO)
    [talk] = stub.calls("POST", "/talks")
    assert talk.status == 201 and talk.body["config"] == {"result_format": "mp4"}
    assert talk.body["source_url"].startswith("s3://") and stub.images[talk.body["source_url"]].data == PORTRAIT
    assert set(talk.body["script"]) == {"type", "audio_url"} and talk.body["script"]["type"] == "audio"
    assert stub.audios[talk.body["script"]["audio_url"]].data == AUDIO
    assert len(stub.calls("GET", "/talks/{id}")) == stub.polls_until_done
    [download] = stub.calls("GET", "/results/{name}")
    assert download.status == 200 and not download.authorized  # the pre-signed link never gets the key
    assert all(r.authorized for r in stub.requests if r is not download)
    assert not warnings_of(caplog)
    await engine.unload()


async def test_no_portrait_sends_the_default_one(stub: DIDStub, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(stub, monkeypatch)
    video = await present(engine, portrait=None)
    assert video.renderer == "d-id"
    [image] = stub.images.values()
    assert image.data == default_portrait() and image.content_type == "image/jpeg"
    await engine.unload()


async def test_other_image_and_audio_formats_are_converted(stub: DIDStub, monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.audio import encode

    webp = io.BytesIO()
    Image.new("RGB", (64, 80), (10, 200, 30)).save(webp, "WEBP")
    engine = make_engine(stub, monkeypatch)
    video = await present(engine, portrait=webp.getvalue(), audio=encode(AUDIO, "ogg"))
    [image], [audio] = stub.images.values(), stub.audios.values()
    assert (image.kind, image.content_type, audio.kind, audio.content_type) == ("png", "image/png", "mp3", "audio/mpeg")
    assert abs(video.duration_s - SECONDS) < 0.25
    await engine.unload()


async def test_slow_job_polls_and_reports_progress(stub: DIDStub, monkeypatch: pytest.MonkeyPatch) -> None:
    stub.polls_until_done = 6
    engine = make_engine(stub, monkeypatch, poll_s=0.02, max_poll_s=0.2, poll_growth=1.5)
    progress: list[tuple[float, str]] = []
    video = await present(engine, progress)
    assert video.renderer == "d-id"
    polls = stub.calls("GET", "/talks/{id}")
    assert len(polls) == 6
    notes = [n for _, n in progress]
    assert notes[0] == "D-ID: uploading" and notes[-1] == "D-ID: done"
    assert "D-ID: waiting in the queue" in notes and notes.count("D-ID: rendering") == 4
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] == 1.0
    await engine.unload()


@pytest.mark.parametrize("status", ["error", "rejected"])
async def test_failed_job_is_a_clear_error_without_fallback(
    stub: DIDStub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, status: str
) -> None:
    stub.fail_next_talk, stub.fail_status = "FaceError: no face detected", status
    engine = make_engine(stub, monkeypatch)
    with pytest.raises(PresenterError) as info:
        await present(engine)
    assert info.value.key == "presenter_did_failed"
    assert info.value.params["description"] == "FaceError: no face detected"
    assert t(info.value.key, "en", **info.value.params) == "D-ID could not make the video: FaceError: no face detected"
    assert not warnings_of(caplog) and engine._local is None  # nothing rendered locally
    await engine.unload()


async def test_refused_portrait_is_d_ids_description(stub: DIDStub, monkeypatch: pytest.MonkeyPatch) -> None:
    stub.fail_next("POST", "/images", status=400, body={"kind": "ValidationError", "description": "image too small"})
    engine = make_engine(stub, monkeypatch)
    with pytest.raises(PresenterError) as info:
        await present(engine)
    assert info.value.key == "presenter_did_failed"
    assert info.value.params["description"] == "ValidationError: image too small"
    assert len(stub.calls("POST", "/images")) == 1 and engine._local is None
    await engine.unload()


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_errors_do_not_fall_back(
    stub: DIDStub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    if status == 401:
        engine = make_engine(stub, monkeypatch, key="not-the-key")
    else:
        engine = make_engine(stub, monkeypatch)
        stub.fail_next("POST", "/images", status=403, body={"kind": "PermissionError", "description": "forbidden"})
    with pytest.raises(PresenterError) as info:
        await present(engine)
    assert info.value.key == "presenter_did_auth" and info.value.params["status"] == status
    assert len(stub.requests) == 1  # not retried
    assert not warnings_of(caplog) and engine._local is None
    assert "not-the-key" not in caplog.text
    await engine.unload()


async def test_5xx_and_429_are_retried(stub: DIDStub, monkeypatch: pytest.MonkeyPatch) -> None:
    stub.fail_next("POST", "/talks", status=500, times=2)
    stub.fail_next("GET", "/talks/{id}", status=429, retry_after=0.05)
    stub.fail_next("POST", "/audios", status=503)
    engine = make_engine(stub, monkeypatch)
    video = await present(engine)
    assert (video.renderer, video.note) == ("d-id", None)
    assert [r.status for r in stub.calls("POST", "/talks")] == [500, 500, 201]
    assert [r.status for r in stub.calls("POST", "/audios")] == [503, 201]
    assert [r.status for r in stub.calls("GET", "/talks/{id}")][:2] == [429, 200]
    await engine.unload()


async def test_5xx_after_the_retries_without_fallback_is_unreachable(
    stub: DIDStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub.fail_next("POST", "/talks", status=502, times=3)
    engine = make_engine(stub, monkeypatch, max_retries=2, fallback_local=False)
    with pytest.raises(PresenterError) as info:
        await present(engine)
    assert info.value.key == "presenter_did_unreachable"
    assert len(stub.calls("POST", "/talks")) == 3 and engine._local is None
    await engine.unload()


async def test_a_batch_renders_concurrently(stub: DIDStub, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(stub, monkeypatch)
    short = tone(0.8)
    results = await engine.run([EngineRequest(PresentRequest(audio=AUDIO, portrait=PORTRAIT, **SMALL)),
                                EngineRequest(PresentRequest(audio=short, portrait=PORTRAIT, **SMALL)),
                                EngineRequest("not a PresentRequest")])
    first, second, wrong = results
    assert isinstance(first, Video) and isinstance(second, Video) and isinstance(wrong, TypeError)
    assert abs(first.duration_s - SECONDS) < 0.2 and abs(second.duration_s - 0.8) < 0.2
    assert len(stub.calls("POST", "/talks")) == 2
    await engine.unload()


async def test_a_result_over_the_upload_limit_is_reencoded(stub: DIDStub, monkeypatch: pytest.MonkeyPatch) -> None:
    stub.video_height = 360  # a noisy portrait at 360p: D-ID's MPEG-4 is big enough to need shrinking
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (360, 300, 3), dtype=np.uint8)).save(noise, "PNG")
    engine = make_engine(stub, monkeypatch)
    full = await present(engine, portrait=noise.getvalue())
    limit = len(full.data) // 2
    fitted = await present(engine, portrait=noise.getvalue(), max_bytes=limit)
    assert len(fitted.data) <= limit and fitted.data[4:8] == b"ftyp" and fitted.renderer == "d-id"
    assert abs(fitted.duration_s - SECONDS) < 0.25 and fitted.height <= 360
    assert probe_video(fitted.data)[:2] == (fitted.width, fitted.height)
    with pytest.raises(PresenterError) as info:
        await present(engine, max_bytes=2000)  # not even the audio fits
    assert info.value.key == "presenter_too_large" and engine._local is None
    await engine.unload()


async def test_cancelling_stops_polling_and_drops_the_talk(stub: DIDStub, monkeypatch: pytest.MonkeyPatch) -> None:
    stub.polls_until_done = 10_000
    engine = make_engine(stub, monkeypatch)
    polls = stub.calls  # the request is cancelled once D-ID has been polled three times
    request = EngineRequest(PresentRequest(audio=AUDIO, portrait=PORTRAIT, **SMALL),
                            cancelled=lambda: len(polls("GET", "/talks/{id}")) >= 3)
    [result] = await engine.run([request])
    assert isinstance(result, UserFacingError) and result.key == "job_cancelled"
    assert len(stub.calls("GET", "/talks/{id}")) == 3 and len(stub.calls("DELETE", "/talks/{id}")) == 1
    await engine.unload()


# -- outages: the local renderer takes over ------------------------------------------------------------------------


async def test_did_down_falls_back_to_local(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    engine = DIDPresenterEngine(base_url=closed_port_url(), api_key_env=KEY_ENV, backoff_s=0.01, max_retries=1)
    engine.load()
    MADE.append(engine)
    video = await present(engine, portrait=None)  # the local renderer needs a face: the bundled portrait
    assert video.renderer == "local" and video.data[4:8] == b"ftyp"
    assert video.note is not None and video.note.startswith("D-ID was unavailable (cannot connect")
    assert "rendered locally" in video.note
    assert abs(video.duration_s - SECONDS) < 0.3 and video.height == SMALL["size"]
    assert any("D-ID unavailable" in w for w in warnings_of(caplog))
    assert KEY not in caplog.text
    await engine.unload()


async def test_did_down_without_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    engine = DIDPresenterEngine(base_url=closed_port_url(), api_key_env=KEY_ENV, backoff_s=0.01, max_retries=1,
                                fallback_local=False)
    engine.load()
    MADE.append(engine)
    with pytest.raises(PresenterError) as info:
        await present(engine)
    assert info.value.key == "presenter_did_unreachable"
    await engine.unload()


async def test_5xx_after_the_retries_falls_back_to_local(
    stub: DIDStub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stub.fail_next("POST", "/talks", status=503, times=3, retry_after=0.01)
    engine = make_engine(stub, monkeypatch, max_retries=2)
    progress: list[tuple[float, str]] = []
    video = await present(engine, progress, portrait=None)
    assert video.renderer == "local"
    assert video.note == "D-ID was unavailable (POST /talks: status 503); rendered locally"
    assert [r.status for r in stub.calls("POST", "/talks")] == [503, 503, 503]
    assert progress[0] == (0.02, "D-ID: uploading") and progress[-1][0] == 1.0  # then the local renderer's
    assert any("D-ID unavailable (POST /talks: status 503)" in w for w in warnings_of(caplog))


async def test_timeout_falls_back_and_drops_the_talk(
    stub: DIDStub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stub.polls_until_done = 10_000
    engine = make_engine(stub, monkeypatch, timeout_s=1.0)
    video = await present(engine, portrait=None)
    assert video.renderer == "local"
    assert video.note == "D-ID was unavailable (no video after 1 s); rendered locally"
    [talk] = stub.calls("POST", "/talks")
    assert stub.calls("GET", "/talks/{id}") and stub.calls("DELETE", "/talks/{id}")[0].status == 200
    assert talk.status == 201 and not stub.talks  # deleted
    assert any("D-ID unavailable (no video after 1 s)" in w for w in warnings_of(caplog))
    await engine.unload()


async def test_the_key_is_never_logged(stub: DIDStub, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(stub, monkeypatch, fallback_local=False)
    stub.fail_next("POST", "/talks", status=500)
    await present(engine)
    stub.fail_next_talk = "FaceError: no face detected"
    with pytest.raises(PresenterError) as failed:
        await present(engine)
    stub.fail_next("POST", "/images", status=500, times=4)
    with pytest.raises(PresenterError) as down:
        await present(engine)
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert "D-ID" in logged and KEY not in logged
    assert KEY not in repr(failed.value.params) + repr(down.value.params)
    assert "Signature=" not in logged  # nor the pre-signed result links
    await engine.unload()


async def test_missing_key_fails_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(EngineUnavailable, match=KEY_ENV):
        DIDPresenterEngine(api_key_env=KEY_ENV).load()


# -- the stand-in itself -------------------------------------------------------------------------------------------


async def test_stub_speaks_d_ids_protocol(stub: DIDStub) -> None:
    auth = {"Authorization": f"Basic {KEY}"}
    async with aiohttp.ClientSession(base_url=stub.url) as http:
        async with http.post("/talks", json={}) as resp:
            assert resp.status == 401 and (await resp.json())["kind"] == "AuthorizationError"
        form = aiohttp.FormData()
        form.add_field("image", b"", filename="a.png", content_type="image/png")
        async with http.post("/images", data=form, headers=auth) as resp:
            assert resp.status == 400 and (await resp.json())["kind"] == "ValidationError"
        form = aiohttp.FormData()
        form.add_field("audio", b"not audio at all", filename="a.mp3", content_type="audio/mpeg")
        async with http.post("/audios", data=form, headers=auth) as resp:
            assert resp.status == 400
        form = aiohttp.FormData()
        form.add_field("image", AUDIO, filename="a.wav", content_type="audio/wav")  # audio sent as the image
        async with http.post("/images", data=form, headers=auth) as resp:
            assert resp.status == 400
        body = {"source_url": "s3://elsewhere/x.png", "script": {"type": "audio", "audio_url": "s3://x"}}
        async with http.post("/talks", json=body, headers=auth) as resp:
            assert resp.status == 400 and "source_url" in (await resp.json())["description"]
        async with http.get("/talks/tlk_missing", headers=auth) as resp:
            assert resp.status == 404
    assert all(KEY not in repr(r) for r in stub.requests)


def test_stub_renders_a_playable_mp4() -> None:
    data, duration = render_mp4(PORTRAIT, "png", AUDIO, "wav", height=96)
    assert data[4:8] == b"ftyp" and abs(duration - SECONDS) < 0.2
    width, height, fps, seconds = probe_video(data)
    assert (height, fps, seconds) == (96, 25.0, duration) and width % 2 == 0
