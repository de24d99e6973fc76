"""Every image command end to end through the web chat, on tiny random-weight models saved to disk.

The diffusion, CLIP and OWL-ViT engines load their folders with `local_files_only=True` through the code
production uses; the pool batches, reports progress and cancels for real. Output images are noise, so the
tests check what can be checked: sizes, seeds, batching, previews, buttons, search ranking and messages.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bot.app import RunningApp
from tests.conftest import AppFactory
from tests.integration.conftest import SECRET
from tests.integration.test_slack import post
from tests.support.image_models import TinyModels, image_engines
from tests.support.slack_stub import SlackStub, form_body, interactive_body
from tests.support.web_client import Visitor

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

Frame = dict[str, Any]


SMALL = {"width": 64, "height": 64, "steps": 4, "max_steps": 400, "preview_every": 1, "preview_interval_s": 0.0,
         "max_upscale_side": 32, "max_pixels": 128 * 128, "max_decode_pixels": 2_000_000}


async def start(app_factory: AppFactory, tiny: TinyModels, **images: Any) -> RunningApp:
    return await app_factory(engines=image_engines(tiny), images={**SMALL, **images},
                             responder={"stream_interval_s": 0.05, "progress_interval_s": 0.0},
                             access={"admins": ["web:boss"]}, rate_limit={"per_user_per_minute": 600, "burst": 100})


def png(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 40, 40), box: bool = True) -> bytes:
    image = Image.new("RGB", size, color)
    if box:
        image.paste((20, 20, 220), (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def attach(v: Visitor, name: str, data: bytes) -> str:
    status, body = await v.upload(name, data)
    assert status == 200, body
    return str(body["id"])


async def fetch(app: RunningApp, frame: Frame) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(app.url + frame["url"]) as resp:
        assert resp.status == 200
        return await resp.read()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def same_picture(a: bytes, b: bytes) -> bool:
    """Equal up to float summation order: a batch of another size may move a few pixels by a level or two."""
    import numpy as np

    x = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), dtype=np.int16)
    y = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.int16)
    if x.shape != y.shape:
        return False
    diff = np.abs(x - y)
    return int(diff.max()) <= 2 and float((diff > 0).mean()) < 0.01


def files(v: Visitor, mid: str, name_prefix: str = "image-") -> list[Frame]:
    return [f for f in v.replies(mid) if f.get("type") == "file" and f["name"].startswith(name_prefix)]


async def wait(v: Visitor, mid: str, match: Callable[[Frame], bool], timeout: float = 90) -> Frame:
    try:
        return await v.wait_for(lambda f: f.get("reply_to") == mid and match(f), timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"no matching reply; got {v.replies(mid)}") from None


def is_image(f: Frame) -> bool:
    return f.get("type") == "file" and f["name"].startswith("image-")


def said(text: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") in ("message", "error") and text in f.get("text", "")


def batch_sizes(app: RunningApp, engine: str) -> tuple[float, float]:
    """(batches run, requests in them) for one engine, from the pool's metrics."""
    count = total = 0.0
    for metric in app.services.metrics.batch_size.collect():
        for sample in metric.samples:
            if sample.labels.get("engine") == engine and sample.name.endswith("_count"):
                count = sample.value
            if sample.labels.get("engine") == engine and sample.name.endswith("_sum"):
                total = sample.value
    return count, total


async def test_imagine_progress_previews_seed_and_buttons(app_factory: AppFactory, tiny: TinyModels) -> None:
    app = await start(app_factory, tiny)
    async with Visitor(app.url) as v:
        mid = await v.send("/imagine a red fox in the snow size:64x64 steps:10 seed:7")
        first = await wait(v, mid, is_image)
        replies = v.replies(mid)
        queued = next(f for f in replies if f.get("type") == "message" and "Queued #1" in f["text"])
        assert [b["value"].split(":")[0] for b in queued["buttons"]] == ["cancel"]
        progress = [f for f in replies if f.get("type") == "progress"]
        assert len(progress) >= 3, progress
        previews = [f for f in progress if str(f.get("preview", "")).startswith("data:image/png;base64,")]
        assert previews and "step" in previews[0]["note"]
        assert "seed 7 ·" in first["caption"] and "64×64" in first["caption"] and "10 steps" in first["caption"]
        assert [b["value"].split(":")[0] for b in first["buttons"]] == ["regen", "vary", "upscale"]
        data = await fetch(app, first)
        assert size_of(data) == (64, 64)

        # The same seed gives the same image; another seed does not.
        again = await v.send("/imagine a red fox in the snow size:64x64 steps:10 seed:7")
        assert await fetch(app, await wait(v, again, is_image)) == data
        other = await v.send("/imagine a red fox in the snow size:64x64 steps:10 seed:8")
        assert await fetch(app, await wait(v, other, is_image)) != data

        # New seed: the same prompt and size again, with a different seed.
        click = await v.click("img", first["buttons"][0]["value"])
        regen = await wait(v, click, is_image)
        assert "a red fox in the snow" in regen["caption"] and "seed 7 ·" not in regen["caption"]
        # Upscale x4 from the button.
        click = await v.click("img", first["buttons"][2]["value"])
        big = await wait(v, click, is_image)
        assert size_of(await fetch(app, big)) == (128, 128)  # 64 -> max_upscale_side 32 -> x4
        # Variations: img2img of that image, several new seeds.
        click = await v.click("img", first["buttons"][1]["value"])
        await wait(v, click, is_image)
        await asyncio.sleep(0.5)
        assert len(files(v, click)) == 4
        # A forged button for an image that does not exist.
        click = await v.click("img", "regen:999999")
        await wait(v, click, said("no longer available"))


async def test_four_concurrent_requests_share_one_pipeline_call(app_factory: AppFactory, tiny: TinyModels) -> None:
    app = await start(app_factory, tiny)
    visitors = [Visitor(app.url) for _ in range(4)]
    for v in visitors:
        await v.__aenter__()
    try:
        before = batch_sizes(app, "diffusion")
        mids = await asyncio.gather(*(v.send(f"/imagine a lighthouse number {i} seed:{i}")
                                      for i, v in enumerate(visitors)))
        frames = await asyncio.gather(*(wait(v, mid, is_image) for v, mid in zip(visitors, mids, strict=True)))
        after = batch_sizes(app, "diffusion")
        assert (after[0] - before[0], after[1] - before[1]) == (1, 4)
        assert all(f"seed {i} ·" in frame["caption"] for i, frame in enumerate(frames))
        # Each request's image is the one it gets alone with its seed.
        alone = await visitors[2].send("/imagine a lighthouse number 2 seed:2")
        alone_png = await fetch(app, await wait(visitors[2], alone, is_image))
        assert same_picture(alone_png, await fetch(app, frames[2]))
        assert not same_picture(alone_png, await fetch(app, frames[1]))
    finally:
        for v in visitors:
            await v.__aexit__()


async def test_cancel_stops_a_running_job(app_factory: AppFactory, tiny: TinyModels) -> None:
    app = await start(app_factory, tiny)
    async with Visitor(app.url) as v:
        mid = await v.send("/imagine an endless staircase steps:400")
        queued = await wait(v, mid, said("Queued"))
        await wait(v, mid, lambda f: f.get("type") == "progress" and f.get("fraction", 0) > 0)
        click = await v.click("img", queued["buttons"][0]["value"])
        await wait(v, mid, said("Cancelled"), timeout=30)
        await asyncio.sleep(0.5)
        assert not files(v, mid)
        progress = [f["fraction"] for f in v.replies(mid) if f.get("type") == "progress"]
        assert max(progress) < 0.5
        assert not [f for f in v.replies(click) if f.get("type") == "error"]
        # Cancelling a finished job says so; the engine keeps serving.
        late = await v.click("img", queued["buttons"][0]["value"])
        await wait(v, late, said("already finished"))
        mid = await v.send("/imagine a short staircase")
        await wait(v, mid, is_image)


async def test_cancel_is_only_for_the_requester_or_an_admin(app_factory: AppFactory, tiny: TinyModels) -> None:
    app = await start(app_factory, tiny)
    async with Visitor(app.url) as owner, Visitor(app.url) as stranger:
        mid = await owner.send("/imagine a slow river steps:300")
        queued = await wait(owner, mid, said("Queued"))
        click = await stranger.click("img", queued["buttons"][0]["value"])
        await wait(stranger, click, said("Only the person who asked"))
        await owner.click("img", queued["buttons"][0]["value"])
        await wait(owner, mid, said("Cancelled"), timeout=30)


async def test_edit_inpaint_upscale_and_every_controlnet(app_factory: AppFactory, tiny: TinyModels) -> None:
    app = await start(app_factory, tiny)
    async with Visitor(app.url) as v:
        photo = await attach(v, "photo.png", png((96, 64)))
        mid = await v.send("/edit make it winter strength:0.6 seed:3", attachments=[photo])
        edited = await wait(v, mid, is_image)
        assert "strength 0.6" in edited["caption"]
        assert size_of(await fetch(app, edited)) == (96, 64)

        mask = Image.new("L", (96, 64), 0)
        mask.paste(255, (30, 20, 60, 50))
        out = io.BytesIO()
        mask.save(out, format="PNG")
        mask_id = await attach(v, "mask.png", out.getvalue())
        mid = await v.send("/inpaint a vase of flowers", attachments=[photo, mask_id])
        assert size_of(await fetch(app, await wait(v, mid, is_image))) == (96, 64)
        wrong = await attach(v, "small-mask.png", png((32, 32), (255, 255, 255), box=False))
        mid = await v.send("/inpaint a vase", attachments=[photo, wrong])
        await wait(v, mid, said("same size as the image"))
        mid = await v.send("/inpaint a vase", attachments=[photo])
        await wait(v, mid, said("then a mask"))

        small = await attach(v, "small.png", png((32, 24)))
        mid = await v.send("/upscale", attachments=[small])
        assert size_of(await fetch(app, await wait(v, mid, is_image))) == (128, 96)

        for kind in ("canny", "openpose", "scribble"):
            mid = await v.send(f"/control {kind} a robot in a garden seed:5", attachments=[photo])
            image = await wait(v, mid, is_image)
            assert f"controlnet {kind}" in image["caption"]
            control_map = next(f for f in v.replies(mid) if f.get("type") == "file" and f["name"] == f"{kind}-map.png")
            assert size_of(await fetch(app, control_map))[0] > 0
        mid = await v.send("/control canny a robot detect:no", attachments=[photo])
        await wait(v, mid, is_image)
        assert not [f for f in v.replies(mid) if f.get("name") == "canny-map.png"]
        mid = await v.send("/edit something")
        await wait(v, mid, said("Attach an image to /edit"))


async def test_lora_models_and_schedulers_by_name(app_factory: AppFactory, tiny: TinyModels) -> None:
    app = await start(app_factory, tiny)
    async with Visitor(app.url) as v:
        plain = await v.send("/imagine an ink painting seed:11")
        with_lora = await v.send("/imagine an ink painting seed:11 lora:ink")
        plain_png = await fetch(app, await wait(v, plain, is_image))
        lora_frame = await wait(v, with_lora, is_image)
        assert "lora ink" in lora_frame["caption"]
        assert await fetch(app, lora_frame) != plain_png
        mid = await v.send("/imagine an ink painting lora:nope")
        await wait(v, mid, said("no LoRA called nope"))
        mid = await v.send("/imagine an ink painting model:nope")
        await wait(v, mid, said("no image model called nope"))
        mid = await v.send("/imagine an ink painting scheduler:euler_a seed:11")
        euler = await wait(v, mid, is_image)
        assert "euler_a" in euler["caption"]
        mid = await v.send("/imagine an ink painting scheduler:bogus")
        await wait(v, mid, said("scheduler"))
        mid = await v.send("/imagine a cat size:12x9000")
        await wait(v, mid, said("Size 12x9000 doesn't work"))


async def test_safety_checker_withholds_until_an_admin_turns_it_off(app_factory: AppFactory,
                                                                  tiny: TinyModels) -> None:
    app = await start(app_factory, tiny)
    async with Visitor(app.url, visitor="boss") as admin, Visitor(app.url) as user:
        mid = await user.send("/imagine a beach model:flagged")
        await wait(user, mid, said("withheld"))
        assert not files(user, mid)
        mid = await user.send("/images safety off")
        await wait(user, mid, said("don't have access to /images"))
        mid = await admin.send("/images safety off")
        await wait(admin, mid, said("no"))
        mid = await user.send("/imagine a beach model:flagged")
        await wait(user, mid, is_image)


async def test_bad_images_and_blocked_prompts(app_factory: AppFactory, tiny: TinyModels) -> None:
    app = await start(app_factory, tiny)
    async with Visitor(app.url) as v:
        broken = await attach(v, "broken.png", png()[:60])
        mid = await v.send("/edit a cat", attachments=[broken])
        await wait(v, mid, said("can't read broken.png as an image"))
        big = await attach(v, "big.png", png((300, 200), box=False))
        mid = await v.send("/edit a cat seed:1", attachments=[big])
        await wait(v, mid, said("scaled it down"))
        edited = await wait(v, mid, is_image)
        width, height = size_of(await fetch(app, edited))
        assert width * height <= 128 * 128 and abs(width / height - 1.5) < 0.2
        huge = await attach(v, "huge.png", png((2000, 1500), box=False))
        mid = await v.send("/edit a cat", attachments=[huge])
        await wait(v, mid, said("megapixel limit"))
        mid = await v.send("/imagine how to kill yourself painlessly")
        await wait(v, mid, lambda f: f.get("type") in ("message", "error") and "/imagine" not in f.get("text", "")
                   and ("reach out" in f.get("text", "") or "policy" in f.get("text", "")))
        assert not files(v, mid)


async def test_images_uploaded_are_indexed_for_find_classify_and_detect(app_factory: AppFactory,
                                                                        tiny: TinyModels) -> None:
    app = await start(app_factory, tiny)
    async with Visitor(app.url) as v:
        red = await attach(v, "red.png", png((64, 64), (230, 20, 20), box=False))
        mid = await v.send("", attachments=[red])
        await wait(v, mid, said("Saved red.png"))
        blue = await attach(v, "blue.png", png((64, 64), (20, 20, 230), box=False))
        mid = await v.send("", attachments=[blue])
        await wait(v, mid, said("Saved blue.png"))
        gen = await v.send("/imagine a green field seed:4")
        await wait(v, gen, is_image)
        assert await app.services.store.images.count(1) >= 3

        # An attached image finds itself first among the workspace's images (the query copy is excluded).
        again = await attach(v, "query.png", png((64, 64), (230, 20, 20), box=False))
        mid = await v.send("/find", attachments=[again])
        await wait(v, mid, lambda f: f.get("type") == "file" and f["name"] == "match-1.png")
        await asyncio.sleep(0.3)
        matches = [f for f in v.replies(mid) if f.get("type") == "file"]
        first = await fetch(app, matches[0])
        assert Image.open(io.BytesIO(first)).convert("RGB").getpixel((5, 5)) == (230, 20, 20)
        mid = await v.send("/find a green field")
        await wait(v, mid, lambda f: f.get("type") == "file" and "similarity" in f.get("caption", ""))

        mid = await v.send("/classify cat, dog, bird", attachments=[red])
        card = await wait(v, mid, lambda f: f.get("type") == "message" and "%" in f.get("text", ""))
        assert all(label in card["text"] for label in ("cat", "dog", "bird"))
        mid = await v.send("/classify cat", attachments=[red])
        await wait(v, mid, said("at least two labels"))

        mid = await v.send("/detect cat, dog threshold:0", attachments=[blue])
        detected = await wait(v, mid, lambda f: f.get("type") == "file" and f["name"] == "detected.png")
        assert size_of(await fetch(app, detected)) == (64, 64)
        assert "cat" in detected["caption"] or "dog" in detected["caption"]


async def test_without_models_the_commands_say_what_to_configure(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        for command in ("/imagine a cat", "/find a cat"):
            mid = await v.send(command)
            await wait(v, mid, said("isn't set up on this server"), timeout=30)


async def test_slack_imagine_uploads_and_its_buttons_come_back_through_the_router(
        app_factory: AppFactory, tiny: TinyModels, slack_stub: SlackStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    app = await app_factory(engines=image_engines(tiny), images=SMALL,
                            slack={"api_url": slack_stub.url, "min_post_interval_s": 0.0},
                            responder={"stream_interval_s": 0.05, "progress_interval_s": 0.0})

    def images() -> list[Any]:
        return [f for f in slack_stub.files.values() if f.name.startswith("image-") and f.completed]

    await post(app, form_body(slack_stub.slash_command("/imagine", "a red fox seed:7", channel="C1")),
               content_type="application/x-www-form-urlencoded")
    buttons = await slack_stub.wait_for_message(
        "C1", where=lambda m: "seed 7 ·" in m.get("text", "") and bool(m.get("blocks")), timeout=60)
    assert len(images()) == 1 and size_of(images()[0].content) == (64, 64)
    actions = [e for block in buttons["blocks"] if block.get("type") == "actions" for e in block["elements"]]
    regen = next(a for a in actions if a["value"].startswith("regen:"))
    payload = slack_stub.block_action(regen["action_id"], regen["value"], channel="C1", message_ts=buttons["ts"])
    status, _ = await post(app, interactive_body(payload), content_type="application/x-www-form-urlencoded")
    assert status == 200
    for _ in range(600):
        if len(images()) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(images()) == 2 and images()[1].content != images()[0].content
    # A preview went up too (Slack has no inline progress images: a small file, throttled per job).
    assert any(f.name == "preview.png" for f in slack_stub.files.values())


async def test_the_queue_position_counts_down_until_the_job_starts(app_factory: AppFactory, tiny: TinyModels) -> None:
    engines = image_engines(tiny)
    engines["diffusion"] = engines["diffusion"].model_copy(update={"max_batch": 1})  # one job at a time
    app = await app_factory(engines=engines, images={**SMALL, "queue_poll_s": 0.05},
                            responder={"stream_interval_s": 0.05, "progress_interval_s": 0.0},
                            rate_limit={"per_user_per_minute": 600, "burst": 100})
    async with Visitor(app.url) as v:
        warm = await v.send("/imagine a short road")  # loads the model
        await wait(v, warm, is_image)
        # a long job is running; the two sent next wait behind it, as #1 and #2
        first = await v.send("/imagine a long road steps:200 seed:1")
        await wait(v, first, lambda f: f.get("type") == "progress" and f.get("fraction", 0) > 0)
        second = await v.send("/imagine a long road number 2 steps:10 seed:2")
        await wait(v, second, said("Queued #1"))  # handled (and queued) before the third arrives
        mids = [first, second, await v.send("/imagine a long road number 3 steps:10 seed:3")]
        for mid in mids:
            await wait(v, mid, is_image, timeout=120)
        last = next(f for f in v.replies(mids[2]) if f.get("type") == "message" and "Queued #" in f["text"])
        assert "Queued #2" in last["text"]
        edits = [f["text"] for f in v.frames if f.get("type") == "edit" and f.get("id") == last["id"]]
        assert edits and edits[-1].startswith("Started drawing"), edits
        positions = [int(found.group(1)) for text in [last["text"], *edits[:-1]]
                     if (found := re.search(r"#(\d+)", text))]
        assert len(positions) == len(edits) and positions[-1] == 1
        assert positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions), positions
