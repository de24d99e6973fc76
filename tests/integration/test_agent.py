"""The agent through the web chat, with the OpenAI stand-in scripting its tool calls and the tiny image models
drawing: plans over several steps, conversation images by reference, failures, loops and bad arguments."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import pytest
from PIL import Image

from bot.app import RunningApp
from handlers.imagefiles import resized
from tests.conftest import AppFactory
from tests.integration.test_images import SMALL, fetch, is_image, said, size_of, wait
from tests.support.image_models import TinyModels, image_engines
from tests.support.openai_stub import OpenAIStub, Reply
from tests.support.web_client import Visitor

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


def call(name: str, **arguments: Any) -> Reply:
    return Reply(tool_calls=[{"name": name, "arguments": arguments}])


async def start(app_factory: AppFactory, tiny: TinyModels, **agent: Any) -> RunningApp:
    return await app_factory(engines=image_engines(tiny), images=SMALL, agent={"max_steps": 6, **agent},
                             responder={"stream_interval_s": 0.05, "progress_interval_s": 0.0},
                             rate_limit={"per_user_per_minute": 600, "burst": 100})


def tool_results(stub: OpenAIStub) -> list[str]:
    """The tool messages the model was sent back, in order (from the last request)."""
    last = stub.chat_requests()[-1]
    return [m["content"] for m in last["messages"] if m["role"] == "tool"]


async def test_draw_edit_upscale_in_order(app_factory: AppFactory, tiny: TinyModels, openai_stub: OpenAIStub) -> None:
    app = await start(app_factory, tiny)
    openai_stub.script(call("generate_image", prompt="a cat sitting on a mat"),
                       call("edit_image", image="last", prompt="a blue cat sitting on a mat"),
                       call("upscale_image", image="the blue cat"),
                       Reply(text="Here is your big blue cat."))
    async with Visitor(app.url) as v:
        mid = await v.send("/agent draw a cat, then make it blue, then upscale it")
        await wait(v, mid, said("Here is your big blue cat."), timeout=120)
        images = [f for f in v.replies(mid) if is_image(f)]
        assert len(images) == 3
        assert "a cat sitting on a mat" in images[0]["caption"]
        assert "a blue cat" in images[1]["caption"] and "strength" in images[1]["caption"]
        first, second, third = [await fetch(app, f) for f in images]
        assert size_of(first) == size_of(second) == (64, 64)  # the server's default size
        assert size_of(third) == (128, 128)  # 64 x 64 -> 32 (max_upscale_side) -> x4
        steps = [f["text"] for f in v.replies(mid) if f.get("type") == "message" and f["text"].startswith("▶")]
        assert [s.split(":")[1].strip().split("(")[0] for s in steps] == ["generate_image", "edit_image",
                                                                          "upscale_image"]
        # The edit's input was the first image, and the upscale's the second.
        store = app.services.store
        rows = [row for i in range(1, 40) if (row := await store.images.get(i)) is not None]
        by_sha = {}
        for row in rows:
            blob = await store.blobs.get(row.blob_id)
            assert blob is not None
            by_sha[blob.sha256] = row
        edit_row = by_sha[hashlib.sha256(second).hexdigest()]
        up_row = by_sha[hashlib.sha256(third).hexdigest()]
        # (the upscaler's input is the second image scaled to max_upscale_side first)
        for row, source in ((edit_row, first), (up_row, resized(second, 32, 32))):
            assert row.params is not None
            input_blob = await store.blobs.get(int(row.params["input_blob"]))
            assert input_blob is not None and input_blob.sha256 == hashlib.sha256(source).hexdigest()
        # The model saw each result before planning the next step, and the tools were declared.
        requests = openai_stub.chat_requests()
        assert {t["function"]["name"] for t in requests[0]["tools"]} >= {"generate_image", "edit_image",
                                                                         "upscale_image", "calculate", "current_time"}
        assert "posted as image id" in tool_results(openai_stub)[0]
        # A later request in the same conversation can name the images by number.
        openai_stub.script(call("describe_image", image="1"), Reply(text="It is the first cat."))
        mid = await v.send("/agent what is in the first picture?")
        await wait(v, mid, said("It is the first cat."))
        assert "a cat sitting on a mat" in tool_results(openai_stub)[0]
        openai_stub.script(call("describe_image", image="the second one"), Reply(text="The blue one."))
        mid = await v.send("/agent and the second one?")
        await wait(v, mid, said("The blue one."))
        assert tool_results(openai_stub)[0].startswith("image 2;") and "a blue cat" in tool_results(openai_stub)[0]
        # Earlier requests and answers of the conversation come along.
        system = openai_stub.chat_requests()[-1]["messages"][0]["content"]
        assert "[user] what is in the first picture? [assistant] It is the first cat." in system


async def test_a_request_needing_no_tool_gets_a_plain_answer(app_factory: AppFactory, tiny: TinyModels,
                                                            openai_stub: OpenAIStub) -> None:
    app = await start(app_factory, tiny)
    openai_stub.script(Reply(text="Paris is the capital of France."))
    async with Visitor(app.url) as v:
        mid = await v.send("/agent what is the capital of France?")
        await wait(v, mid, said("Paris is the capital of France."))
        assert not [f for f in v.replies(mid) if f.get("type") == "message" and f["text"].startswith("▶")]
    assert len(openai_stub.chat_requests()) == 1


async def test_agent_mode_channel_calculates_and_tells_time(app_factory: AppFactory, tiny: TinyModels,
                                                            openai_stub: OpenAIStub) -> None:
    app = await start(app_factory, tiny)
    async with Visitor(app.url) as v:
        mid = await v.send("/agent on")
        await wait(v, mid, said("Agent mode in this channel: yes"))
        openai_stub.script(call("calculate", expression="(3.5 + 2) * 4 ** 2"), Reply(text="It is 88."))
        mid = await v.send("what is (3.5+2)*4^2?")
        await wait(v, mid, said("It is 88."))
        assert tool_results(openai_stub) == ["(3.5 + 2) * 4 ** 2 = 88"]
        openai_stub.script(call("current_time", timezone="Asia/Shanghai"), Reply(text="Time given."))
        mid = await v.send("现在几点？")
        await wait(v, mid, said("Time given."))
        assert "Asia/Shanghai" in tool_results(openai_stub)[0]
        mid = await v.send("/agent off")
        await wait(v, mid, said("Agent mode in this channel: no"))


async def test_a_failing_tool_is_reported_and_the_agent_recovers(app_factory: AppFactory, tiny: TinyModels,
                                                                 openai_stub: OpenAIStub) -> None:
    app = await start(app_factory, tiny)
    openai_stub.script(call("edit_image", image="last", prompt="make it blue"),
                       call("generate_image", prompt="a blue cat"),
                       Reply(text="There was nothing to edit, so I drew a new blue cat."))
    async with Visitor(app.url) as v:
        mid = await v.send("/agent make the picture blue")
        await wait(v, mid, said("so I drew a new blue cat"), timeout=120)
        assert any("edit_image failed" in f.get("text", "") and "no images" in f["text"] for f in v.replies(mid))
        assert len([f for f in v.replies(mid) if is_image(f)]) == 1
        assert tool_results(openai_stub)[0].startswith("Error: There are no images")
        # A reference to an image that does not exist: the model is told which ones do.
        openai_stub.script(call("upscale_image", image="the dragon picture"), Reply(text="No dragon here."))
        mid = await v.send("/agent upscale the dragon picture")
        await wait(v, mid, said("No dragon here."))
        assert "No image matches “the dragon picture”. Images here: 1: a blue cat" in tool_results(openai_stub)[0]


async def test_bad_arguments_are_explained_once_then_the_agent_stops(app_factory: AppFactory, tiny: TinyModels,
                                                                     openai_stub: OpenAIStub) -> None:
    app = await start(app_factory, tiny)
    openai_stub.script(call("calculate", formula="1+1"), call("calculate", expression="1+1"),
                       Reply(text="1 + 1 = 2."))
    async with Visitor(app.url) as v:
        mid = await v.send("/agent add one and one")
        await wait(v, mid, said("1 + 1 = 2."))
        assert tool_results(openai_stub)[0].startswith("Error: calculate needs: expression")
        openai_stub.script(call("calculate"), call("calculate", value=3))
        mid = await v.send("/agent calculate something")
        await wait(v, mid, said("kept calling calculate wrongly"))
        openai_stub.script(call("generate_image", prompt=["not", "a", "string"]),
                           Reply(tool_calls=[{"name": "generate_image", "arguments": "{not json"}]))
        mid = await v.send("/agent draw")
        await wait(v, mid, said("kept calling generate_image wrongly"))


async def test_loops_and_the_step_bound_stop_the_agent(app_factory: AppFactory, tiny: TinyModels,
                                                       openai_stub: OpenAIStub) -> None:
    app = await start(app_factory, tiny, max_steps=3)
    async with Visitor(app.url) as v:
        # Asking again for a result it has: the agent asks for the answer without tools...
        openai_stub.script(call("calculate", expression="2*2"), call("calculate", expression="2*2"),
                           Reply(text="It is 4."))
        mid = await v.send("/agent what is 2*2")
        await wait(v, mid, said("It is 4."))
        assert "tools" not in openai_stub.chat_requests()[-1]
        assert len([f for f in v.replies(mid) if f.get("text", "").startswith("▶")]) == 1
        # ... and stops when even then it only wants the tool again, or writes tool JSON it cannot be held to.
        openai_stub.script(call("calculate", expression="2*2"), call("calculate", expression="2*2"),
                           call("calculate", expression="2*2"))
        mid = await v.send("/agent loop please")
        await wait(v, mid, said("repeating the same calculate call"))
        openai_stub.script(Reply(text='{"name": "calculate", "arguments": {"expression": "1"}}\n{"name": "calc'),
                           Reply(text="Nothing to do."))
        mid = await v.send("/agent confuse yourself")
        await wait(v, mid, said("Nothing to do."))
        openai_stub.script(*(call("calculate", expression=f"{i}+1") for i in range(5)))
        mid = await v.send("/agent count forever")
        await wait(v, mid, said("I stopped after 3 steps"))
        assert len([f for f in v.replies(mid) if f.get("text", "").startswith("▶")]) == 3


async def test_agent_tools_obey_moderation(app_factory: AppFactory, tiny: TinyModels,
                                           openai_stub: OpenAIStub) -> None:
    app = await start(app_factory, tiny)
    openai_stub.script(call("generate_image", prompt="how to kill yourself painlessly"), Reply(text="I can't."))
    async with Visitor(app.url) as v:
        mid = await v.send("/agent draw something")
        await wait(v, mid, said("I can't."))
        assert not [f for f in v.replies(mid) if is_image(f)]
        assert any("generate_image failed" in f.get("text", "") for f in v.replies(mid))
    assert json.dumps(openai_stub.chat_requests()[-1]["messages"]).count("Error:") == 1


async def test_agent_tools_obey_quotas(app_factory: AppFactory, tiny: TinyModels, openai_stub: OpenAIStub) -> None:
    app = await app_factory(engines=image_engines(tiny), images=SMALL, quota={"roles": {"user": {"images": 1}}},
                            responder={"stream_interval_s": 0.05, "progress_interval_s": 0.0})
    openai_stub.script(call("generate_image", prompt="a fox"), call("generate_image", prompt="another fox"),
                       Reply(text="One fox only today."))
    async with Visitor(app.url) as v:
        mid = await v.send("/agent draw two foxes")
        await wait(v, mid, said("One fox only today."))
        assert len([f for f in v.replies(mid) if is_image(f)]) == 1
        failed = [f["text"] for f in v.replies(mid) if "generate_image failed" in f.get("text", "")]
        assert failed and "used today's images" in failed[0]


async def test_a_picture_sent_with_words_in_agent_mode_is_what_they_mean(app_factory: AppFactory, tiny: TinyModels,
                                                                         openai_stub: OpenAIStub) -> None:
    app = await start(app_factory, tiny)
    async with Visitor(app.url) as v:
        mid = await v.send("/agent on")
        await wait(v, mid, said("Agent mode in this channel: yes"))
        photo = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 60, 20)).save(photo, format="JPEG")
        status, body = await v.upload("photo.jpg", photo.getvalue())
        assert status == 200
        openai_stub.script(call("edit_image", image="last", prompt="a blue photo"), Reply(text="Made it blue."))
        mid = await v.send("make it blue", attachments=[str(body["id"])])
        await wait(v, mid, said("Made it blue."))
        assert len([f for f in v.replies(mid) if is_image(f)]) == 1
        system = openai_stub.chat_requests()[-1]["messages"][0]["content"]
        assert "1: upload" in system  # the picture is the conversation's image 1
        store = app.services.store
        rows = [row for i in range(1, 10) if (row := await store.images.get(i)) is not None]
        edited = next(r for r in rows if r.source == "generated")
        assert edited.params is not None
        # the edit's input is the photo as sent (decoded from its JPEG, same size and pixels)
        source = Image.open(io.BytesIO(await store.blobs.read(int(edited.params["input_blob"]))))
        sent = Image.open(io.BytesIO(photo.getvalue())).convert("RGB")
        assert source.size == (64, 48) and list(source.convert("RGB").getdata()) == list(sent.getdata())
