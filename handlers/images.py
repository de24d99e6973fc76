"""Drawing from chat: /imagine, /edit, /inpaint, /upscale, /control, and the buttons under every result.

A request becomes a `GenerateRequest` for the `diffusion` engine. Prompts pass the moderation policy and the
sender's image quota first. The job is submitted, not awaited blindly: the sender sees its queue position
with a Cancel button, progress from the pipeline's step callback, and throttled previews. Concurrent
requests with the same model, size and settings are batched by the pool into one pipeline call. Each image
is uploaded with its parameters and the actions New seed, Variations and Upscale x4; the parameters are
kept with the image (table `image`), so the buttons work after a restart too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any

from bot.context import HandlerContext
from bot.errors import UserFacingError
from bot.events import IncomingEvent
from bot.moderation import enforce
from bot.responder import Button
from bot.router import Option, OptionType, Router
from engines.image_types import (
    CONTROL_TYPES,
    SCHEDULERS,
    GenerateRequest,
    GenerateResult,
    ImageEngineError,
    Preview,
)
from engines.jobs import Job, JobStream
from handlers.imagefiles import LoadedImage, fit, image_attachments, read_image, resized
from handlers.moderation import check_quota
from handlers.usage import record
from handlers.vision import index_image, require

log = logging.getLogger(__name__)
RUNNING = "images.running"  # Services.features key: job id -> RunningJob
SAFETY_KEY = "image_safety"  # workspace setting: False turns the safety checker off
PARAMS = ("mode", "prompt", "negative", "width", "height", "steps", "guidance", "seed", "scheduler", "strength",
          "control", "model", "lora", "lora_scale")
MAX_SEED = 2**31 - 1


@dataclass
class RunningJob:
    job: Job
    platform: str
    user_id: str


def running(ctx: HandlerContext) -> dict[str, RunningJob]:
    jobs: dict[str, RunningJob] = ctx.services.features.setdefault(RUNNING, {})
    return jobs


async def safety_on(ctx: HandlerContext) -> bool:
    assert ctx.identity is not None
    value = (await ctx.store.scoped.get("workspace", ctx.identity.workspace_pk)).get(SAFETY_KEY)
    return value is None or bool(value)


def parse_size(ctx: HandlerContext, text: str | None) -> tuple[int, int]:
    settings = ctx.settings.images
    if not text:
        return settings.width, settings.height
    match = re.fullmatch(r"\s*(\d{2,5})\s*[x×*]\s*(\d{2,5})\s*", text.lower())
    if not match:
        raise UserFacingError("image_bad_size", value=text[:20], max=settings.max_side)
    width, height = int(match.group(1)), int(match.group(2))
    if not (64 <= width <= settings.max_side and 64 <= height <= settings.max_side):
        raise UserFacingError("image_bad_size", value=text[:20], max=settings.max_side)
    return width // 8 * 8, height // 8 * 8


def request_from(ctx: HandlerContext, args: dict[str, Any], **fields: Any) -> GenerateRequest:
    """The typed options every generation command shares, with the server's defaults and limits."""
    settings = ctx.settings.images
    steps = int(args.get("steps") or settings.steps)
    if steps > settings.max_steps:
        raise UserFacingError("out_of_range", command="imagine", option="steps", low=1, high=settings.max_steps)
    count = int(args.get("count") or 1)
    if count > settings.max_count:
        raise UserFacingError("out_of_range", command="imagine", option="count", low=1, high=settings.max_count)
    seed = args.get("seed")
    values: dict[str, Any] = {
        "prompt": str(args.get("prompt") or "").strip(),
        "width": settings.width,
        "height": settings.height,
        "negative": str(args.get("negative") or "").strip(),
        "steps": steps,
        "guidance": float(args["guidance"]) if args.get("guidance") is not None else settings.guidance,
        "seed": int(seed) if seed is not None else random.randint(0, MAX_SEED),
        "count": count,
        "scheduler": args.get("scheduler") or None,
        "model": args.get("model") or None,
        "lora": args.get("lora") or None,
    }
    values.update(fields)
    return GenerateRequest(**values)


async def generate(ctx: HandlerContext, event: IncomingEvent, request: GenerateRequest) -> list[int] | None:
    """Run one request with queue position, Cancel, progress and previews; post the images. The posted images'
    ids (table `image`; withheld ones have none), or None if the job was cancelled."""
    assert ctx.identity is not None
    settings = ctx.settings.images
    require(ctx, settings.engine, ctx.t("image_generation"))
    if request.mode != "upscale" and not request.prompt:
        raise UserFacingError("image_no_prompt")
    await check_quota(ctx, event, "images")
    await enforce(ctx, event, request.prompt, "prompt")
    if request.negative:
        await enforce(ctx, event, request.negative, "prompt")
    request = dataclasses.replace(request, safety=await safety_on(ctx), preview_every=settings.preview_every)
    inputs: dict[str, int] = {}  # kept so that New seed can redo an edit later
    for name, data in (("input_blob", request.image), ("mask_blob", request.mask)):
        if data is not None:
            inputs[name] = (await ctx.store.blobs.put(ctx.identity.workspace_pk, f"{name}.png", "image/png",
                                                      data)).id
    job = ctx.pool.submit(settings.engine, request, progress=ctx.responder.progress, event_id=event.event_id)
    jobs = running(ctx)
    jobs[job.id] = RunningJob(job, event.platform, event.user_id)
    watcher: asyncio.Task[None] | None = None
    try:
        cancel = Button(ctx.t("btn_cancel"), "img", f"cancel:{job.id}", style="danger")
        what = ctx.t(f"mode_{request.mode}")
        position = max(job.position, 1)
        [status] = (await ctx.responder.send(ctx.t("image_queued", position=position, what=what),
                                             buttons=[cancel]))[-1:]
        watcher = asyncio.create_task(follow_queue(ctx, job, status, position, what, cancel))
        shown = 0.0
        async for item in JobStream(job):
            now = time.monotonic()
            if isinstance(item, Preview) and now - shown >= settings.preview_interval_s:
                shown = now
                await ctx.responder.preview(item.png, item.step / max(item.steps, 1),
                                            ctx.t("image_step", step=item.step, steps=item.steps))
        result: GenerateResult = await job.result()
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if job.status == "cancelled" and not (current and current.cancelling()):
            await ctx.responder.send(ctx.t("image_cancelled"))
            return None
        raise
    except ImageEngineError as e:
        raise UserFacingError(e.code, detail=e.detail) from e
    finally:
        jobs.pop(job.id, None)
        if watcher is not None:
            watcher.cancel()
    return await post_result(ctx, event, request, result, inputs)


async def follow_queue(ctx: HandlerContext, job: Job, status: str, position: int, what: str, cancel: Button) -> None:
    """Keep the queued message's position current until the job starts, then say it has."""
    interval = ctx.settings.images.queue_poll_s
    try:
        while not job.done:
            await asyncio.sleep(interval)
            now = job.position
            if now == position or job.done:
                continue
            position = now
            text = ctx.t("image_queued", position=now, what=what) if now > 0 else ctx.t("image_started", what=what)
            await ctx.responder.edit(status, text, buttons=[cancel])
            if now == 0:
                return
    except Exception:  # a status line that cannot be edited (deleted, rate limited) is not worth failing the job
        log.debug("queue position of job %s not updated", job.id, exc_info=True)


async def post_result(ctx: HandlerContext, event: IncomingEvent, request: GenerateRequest, result: GenerateResult,
                      inputs: dict[str, int]) -> list[int]:
    assert ctx.identity is not None
    settings = ctx.settings.images
    withheld = 0
    posted: list[int] = []
    if result.control_map and request.control_detect:
        await ctx.responder.upload(result.control_map, f"{request.control}-map.png", "image/png",
                                   caption=ctx.t("image_control_map", control=request.control or ""))
    for image in result.images:
        await record(ctx, settings.engine, model=result.model, seconds=result.seconds / max(len(result.images), 1))
        if image.withheld:
            withheld += 1
            continue
        params = {name: getattr(request, name) for name in PARAMS}
        params.update(inputs, seed=image.seed, width=image.width, height=image.height, model=result.model)
        blob = await ctx.store.blobs.put(ctx.identity.workspace_pk, f"image-{image.seed}.png", "image/png",
                                         image.png, kind="generated")
        image_id = await index_image(ctx, event, blob.id, image.png, "generated", prompt=request.prompt,
                                     params=params)
        posted.append(image_id)
        caption = describe(ctx, request, result, image.seed, image.width, image.height)
        await ctx.responder.upload(image.png, f"image-{image.seed}.png", "image/png", caption=caption,
                                   buttons=result_buttons(ctx, image_id))
    if withheld:
        await ctx.responder.send(ctx.t("image_withheld", count=withheld))
    for note in result.notes:
        await ctx.responder.send(ctx.t("image_note", note=note))
    return posted


def describe(ctx: HandlerContext, request: GenerateRequest, result: GenerateResult, seed: int, width: int,
             height: int) -> str:
    head = request.prompt if len(request.prompt) <= 200 else request.prompt[:200] + "…"
    parts = [f"seed {seed}", f"{width}×{height}"]
    if request.mode != "upscale":
        parts += [f"{result.steps} steps", f"guidance {request.guidance:g}"]
    if request.scheduler:
        parts.append(request.scheduler)
    if request.mode in ("img2img", "inpaint"):
        parts.append(f"strength {request.strength:g}")
    if request.control:
        parts.append(f"controlnet {request.control}")
    if request.lora:
        parts.append(f"lora {request.lora}")
    parts.append(result.model)
    lines = [head] if head else []
    if request.negative:
        lines.append(ctx.t("image_negative", negative=request.negative[:120]))
    lines.append(" · ".join(parts))
    return "\n".join(lines)


def result_buttons(ctx: HandlerContext, image_id: int | None) -> list[Button]:
    if image_id is None:
        return []
    return [Button(ctx.t("btn_new_seed"), "img", f"regen:{image_id}"),
            Button(ctx.t("btn_variations"), "img", f"vary:{image_id}"),
            Button(ctx.t("btn_upscale"), "img", f"upscale:{image_id}")]


# -- commands -----------------------------------------------------------------------------------------------------

async def one_image(ctx: HandlerContext, event: IncomingEvent, command: str, given: object = None) -> LoadedImage:
    files = image_attachments(event, given)
    if not files:
        raise UserFacingError("image_needed", command=command)
    return await read_image(ctx, files[0])


async def imagine_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    width, height = parse_size(ctx, args.get("size"))
    await generate(ctx, event, request_from(ctx, args, width=width, height=height))


async def edit_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    image = await one_image(ctx, event, "edit", args.get("image"))
    width, height = fit(image.width, image.height, ctx.settings.images.max_side)
    strength = float(args["strength"]) if args.get("strength") is not None else ctx.settings.images.strength
    await generate(ctx, event, request_from(ctx, args, mode="img2img", image=image.png, width=width, height=height,
                                            strength=strength))


async def inpaint_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    files = image_attachments(event, args.get("image"))
    mask_file = args.get("mask") or (files[1] if len(files) > 1 else None)
    if not files:
        raise UserFacingError("image_needed", command="inpaint")
    if mask_file is None or mask_file is files[0]:
        raise UserFacingError("image_mask_needed")
    image = await read_image(ctx, files[0])
    mask = await read_image(ctx, mask_file, notify=False)
    if mask.original != image.original:
        raise UserFacingError("image_mask_size", detail=f"{mask.original[0]}×{mask.original[1]} ≠ "
                                                        f"{image.original[0]}×{image.original[1]}")
    width, height = fit(image.width, image.height, ctx.settings.images.max_side)
    strength = float(args["strength"]) if args.get("strength") is not None else 1.0
    await generate(ctx, event, request_from(ctx, args, mode="inpaint", image=image.png, mask=mask.png,
                                            width=width, height=height, strength=strength))


async def upscale_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    image = await one_image(ctx, event, "upscale", args.get("image"))
    await upscale(ctx, event, image.png, image.width, image.height, str(args.get("prompt") or ""))


async def upscale(ctx: HandlerContext, event: IncomingEvent, png: bytes, width: int, height: int,
                  prompt: str) -> list[int] | None:
    side = ctx.settings.images.max_upscale_side
    if max(width, height) > side:
        new_width, new_height = fit(width, height, side, minimum=8)
        await ctx.responder.send(ctx.t("image_upscale_input", width=width, height=height, new_width=new_width,
                                       new_height=new_height))
        png = await asyncio.to_thread(resized, png, new_width, new_height)
        width, height = new_width, new_height
    request = GenerateRequest(prompt=prompt, mode="upscale", image=png, width=width, height=height,
                              steps=min(ctx.settings.images.steps, 25), guidance=0.0,
                              seed=random.randint(0, MAX_SEED))
    return await generate(ctx, event, request)


async def control_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    image = await one_image(ctx, event, "control", args.get("image"))
    width, height = fit(image.width, image.height, ctx.settings.images.max_side)
    detect = args.get("detect")
    await generate(ctx, event, request_from(ctx, args, mode="control", control=str(args["type"]), image=image.png,
                                            width=width, height=height,
                                            control_detect=True if detect is None else bool(detect)))


async def images_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    """`/images safety on|off` (admins): the safety checker for this workspace."""
    assert ctx.identity is not None
    value = str(ctx.state["args"].get("value") or "").strip().lower()
    if value:
        on = value in {"on", "yes", "true", "1", "开"}
        actor = f"{event.platform}:{event.user_id}"
        await ctx.store.scoped.set("workspace", ctx.identity.workspace_pk, SAFETY_KEY, on, actor)
        await ctx.store.audit.log(actor, "images.safety", {"on": on}, workspace_pk=ctx.identity.workspace_pk)
    state = ctx.t("yes" if await safety_on(ctx) else "no")
    await ctx.responder.send(ctx.t("image_safety_now", state=state))


# -- buttons ------------------------------------------------------------------------------------------------------

async def image_action(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    verb, _, target = (event.action_value or "").partition(":")
    if verb == "cancel":
        await cancel(event, ctx, target)
        return
    if verb not in ("regen", "vary", "upscale") or not target.isdigit():
        raise UserFacingError("unknown_action")
    row = await ctx.store.images.get(int(target))
    # A button value can be forged: only images of the clicker's own workspace.
    if row is None or row.workspace_pk != ctx.identity.workspace_pk or not row.params:
        raise UserFacingError("image_gone")
    params = dict(row.params)
    if verb == "regen":
        values = {name: params[name] for name in PARAMS if name in params}
        values["seed"] = random.randint(0, MAX_SEED)
        for name, field in (("input_blob", "image"), ("mask_blob", "mask")):
            if params.get(name) is not None:
                if await ctx.store.blobs.get(int(params[name])) is None:
                    raise UserFacingError("image_gone")
                values[field] = await ctx.store.blobs.read(int(params[name]))
        await generate(ctx, event, GenerateRequest(**values))
        return
    png = await ctx.store.blobs.read(row.blob_id)
    width, height = int(params.get("width") or 512), int(params.get("height") or 512)
    if verb == "upscale":
        await upscale(ctx, event, png, width, height, row.prompt or "")
        return
    settings = ctx.settings.images
    request = GenerateRequest(prompt=row.prompt or str(params.get("prompt") or ""), mode="img2img", image=png,
                              negative=str(params.get("negative") or ""), width=width, height=height,
                              steps=int(params.get("steps") or settings.steps),
                              guidance=float(params.get("guidance") or settings.guidance),
                              seed=random.randint(0, MAX_SEED), count=min(4, settings.max_count),
                              strength=settings.variation_strength, model=params.get("model"),
                              scheduler=params.get("scheduler"), lora=params.get("lora"))
    await generate(ctx, event, request)


async def cancel(event: IncomingEvent, ctx: HandlerContext, job_id: str) -> None:
    assert ctx.identity is not None
    entry = running(ctx).get(job_id)
    if entry is None:
        await ctx.responder.send(ctx.t("image_cancel_late"))
        return
    mine = (entry.platform, entry.user_id) == (event.platform, event.user_id)
    if not mine and ctx.identity.role != "admin":
        raise UserFacingError("image_cancel_denied")
    entry.job.cancel()
    log.info("image job %s cancelled by %s:%s", job_id, event.platform, event.user_id)


PROMPT = Option("prompt", OptionType.TEXT, "opt_image_prompt")
COMMON = [Option("negative", OptionType.TEXT, "opt_negative"),
          Option("steps", OptionType.INTEGER, "opt_steps", min_value=1, max_value=500),
          Option("guidance", OptionType.NUMBER, "opt_guidance", min_value=0, max_value=30),
          Option("seed", OptionType.INTEGER, "opt_image_seed", min_value=0, max_value=MAX_SEED),
          Option("count", OptionType.INTEGER, "opt_count", min_value=1, max_value=16),
          Option("scheduler", OptionType.TEXT, "opt_scheduler", choices=SCHEDULERS),
          Option("model", OptionType.TEXT, "opt_image_model"),
          Option("lora", OptionType.TEXT, "opt_lora")]
IMAGE = Option("image", OptionType.ATTACHMENT, "opt_image")
STRENGTH = Option("strength", OptionType.NUMBER, "opt_strength", min_value=0.05, max_value=1)


def register(router: Router) -> None:
    router.command("imagine", "cmd_imagine",
                   options=[dataclasses.replace(PROMPT, required=True), Option("size", OptionType.TEXT, "opt_size"),
                            *COMMON],
                   examples=("/imagine a red fox in the snow, watercolor", "/imagine 一只橘猫 size:768x512 seed:42",
                             "/imagine a castle steps:30 count:2 scheduler:euler_a"))(imagine_command)
    router.command("edit", "cmd_edit", options=[dataclasses.replace(PROMPT, required=True), IMAGE, STRENGTH, *COMMON],
                   examples=("/edit make it a winter scene (attach a photo)", "/edit 变成油画风格 strength:0.6"))(
        edit_command)
    router.command("inpaint", "cmd_inpaint",
                   options=[dataclasses.replace(PROMPT, required=True), IMAGE,
                            Option("mask", OptionType.ATTACHMENT, "opt_mask"), STRENGTH, *COMMON],
                   examples=("/inpaint a vase of flowers (attach the photo, then a mask: white = repaint)",))(
        inpaint_command)
    router.command("upscale", "cmd_upscale", options=[IMAGE, PROMPT],
                   examples=("/upscale (attach an image)", "/upscale a sharp photo of a cat"))(upscale_command)
    router.command("control", "cmd_control",
                   options=[Option("type", OptionType.TEXT, "opt_control_type", required=True, choices=CONTROL_TYPES),
                            dataclasses.replace(PROMPT, required=True), IMAGE,
                            Option("detect", OptionType.BOOLEAN, "opt_control_detect"), *COMMON],
                   examples=("/control canny a cyberpunk city (attach a photo)",
                             "/control scribble a house by a lake (attach a sketch)",
                             "/control openpose an astronaut dancing detect:yes"))(control_command)
    router.command("images", "cmd_images", role="admin",
                   options=[Option("setting", OptionType.TEXT, "opt_images_setting", required=True,
                                   choices=("safety",)),
                            Option("value", OptionType.TEXT, "opt_images_value", choices=("on", "off"))],
                   examples=("/images safety", "/images safety off"))(images_command)
    router.action("img")(image_action)
