"""Seeing images: every image is indexed for search; /classify, /find and /detect.

Each image uploaded to a workspace, and each one the bot draws, is kept as a blob and embedded with CLIP into
the `image` table (pgvector, one partial index per embedding model). `/find <text>` and `/find` with an
attached image return the nearest images of the workspace; `/classify` scores an image against labels
(zero-shot CLIP); `/detect` draws OWL-ViT's boxes for the labels asked. Without a configured model the
images are still kept and the commands say what an operator has to set.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from bot.context import HandlerContext
from bot.errors import EngineError, UnsupportedInput, UserFacingError
from bot.events import EventKind, IncomingEvent
from bot.router import Option, OptionType, Router
from engines.image_types import (
    Classification,
    ClassifyRequest,
    Detection,
    DetectRequest,
    Embeddings,
    EmbedRequest,
    ImageEngineError,
)
from handlers.imagefiles import image_attachments, read_image

log = logging.getLogger(__name__)


def configured(ctx: HandlerContext, engine: str) -> bool:
    """Whether an engine has a model to run: ours need options.model (or models); other engines are trusted."""
    settings = ctx.settings.engines.get(engine)
    if settings is None:
        return False
    if settings.impl.startswith(("engines.vision:", "engines.diffusion:")):
        return bool(settings.options.get("model") or settings.options.get("models"))
    return True


def require(ctx: HandlerContext, engine: str, what: str) -> None:
    if not configured(ctx, engine):
        raise UserFacingError("image_not_configured", detail=what)


async def run_vision(ctx: HandlerContext, engine: str, payload: Any) -> Any:
    try:
        return await ctx.pool.run(engine, payload)
    except ImageEngineError as e:
        raise UserFacingError(e.code, detail=e.detail or ctx.t("the_image")) from e


async def embed_image(ctx: HandlerContext, png: bytes) -> Embeddings | None:
    """CLIP's vector of one image, or None when no CLIP model is configured."""
    engine = ctx.settings.images.clip_engine
    if not (ctx.settings.images.index_images and configured(ctx, engine)):
        return None
    result: Embeddings = await ctx.pool.run(engine, EmbedRequest(images=(png,)))
    return result


async def index_image(ctx: HandlerContext, event: IncomingEvent, blob_id: int, png: bytes, source: str, *,
                      prompt: str | None = None, params: dict[str, Any] | None = None) -> int:
    """Keep one image in the workspace's index (with its CLIP vector when there is a model); its row id."""
    assert ctx.identity is not None
    vector: list[float] | None = None
    model: str | None = None
    try:
        embedded = await embed_image(ctx, png)
        if embedded is not None:
            vector, model = embedded.vectors[0], embedded.model
    except EngineError as e:  # the image is kept unindexed; the reply does not fail for it
        log.warning("image %s not embedded: %s", blob_id, e)
    identity = ctx.identity
    return await ctx.store.images.add(identity.workspace_pk, identity.channel_pk, blob_id, source, vector, model,
                                      prompt=prompt, params=params)


async def image_uploaded(event: IncomingEvent, ctx: HandlerContext) -> None:
    """Images sent without a command: kept, indexed, and the next steps offered."""
    assert ctx.identity is not None
    lines = []
    for attachment in event.attachments:
        try:
            loaded = await read_image(ctx, attachment, notify=False)
        except UnsupportedInput as e:
            lines.append(ctx.t(e.key, **e.params))
            continue
        blob = await ctx.store.blobs.put(ctx.identity.workspace_pk, attachment.name, attachment.mime, loaded.sent)
        await index_image(ctx, event, blob.id, loaded.png, "upload")
        lines.append(ctx.t("image_saved", name=attachment.name, width=loaded.width, height=loaded.height))
    if not lines:
        raise UserFacingError("image_needed", command="find")
    await ctx.responder.send("\n".join(lines))
    if event.text.strip():
        from handlers.chat_config import resolve

        if (await resolve(ctx)).agent_mode:  # "make it blue" sent with the picture: the agent takes it as "last"
            from handlers.agent import run_agent  # the agent builds on vision, not the reverse

            await run_agent(ctx, event, event.text.strip())


def parse_labels(text: str) -> tuple[str, ...]:
    """Comma-separated labels (also Chinese commas and 、), stripped, without repeats, in order."""
    return tuple(dict.fromkeys(part.strip() for part in re.split(r"[,，、]", text) if part.strip()))


async def classify_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    engine = ctx.settings.images.clip_engine
    require(ctx, engine, ctx.t("image_search"))
    labels = parse_labels(str(args.get("labels") or ""))
    if len(labels) < 2:
        raise UserFacingError("classify_labels")
    files = image_attachments(event, args.get("image"))
    if not files:
        raise UserFacingError("image_needed", command="classify")
    image = await read_image(ctx, files[0])
    result: Classification = await run_vision(ctx, engine, ClassifyRequest(image.png, labels))
    lines = [f"{label}: {score:.1%}" for label, score in result.scores]
    await ctx.responder.card(ctx.t("classify_title", name=files[0].name), "\n".join(lines))


async def find_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    args = ctx.state["args"]
    engine = ctx.settings.images.clip_engine
    require(ctx, engine, ctx.t("image_search"))
    query = str(args.get("query") or "").strip()
    files = image_attachments(event, args.get("image"))
    exclude: int | None = None
    if files:
        image = await read_image(ctx, files[0], notify=False)
        blob = await ctx.store.blobs.put(ctx.identity.workspace_pk, files[0].name, "image/png", image.png)
        exclude = blob.id
        embedded: Embeddings = await run_vision(ctx, engine, EmbedRequest(images=(image.png,)))
        await ctx.store.images.add(ctx.identity.workspace_pk, ctx.identity.channel_pk, blob.id, "upload",
                                   embedded.vectors[0], embedded.model)
    elif query:
        embedded = await run_vision(ctx, engine, EmbedRequest(texts=(query,)))
    else:
        raise UserFacingError("find_what")
    hits = await ctx.store.images.search(ctx.identity.workspace_pk, embedded.vectors[0], embedded.model,
                                         limit=ctx.settings.images.find_results, exclude_blob=exclude)
    if not hits:
        await ctx.responder.send(ctx.t("find_none"))
        return
    await ctx.responder.send(ctx.t("find_found", count=len(hits), query=query or files[0].name))
    for rank, hit in enumerate(hits, 1):
        about = hit.prompt or ctx.t(f"image_source_{hit.source}")
        caption = ctx.t("find_hit", rank=rank, score=f"{hit.score:.2f}", about=about[:120])
        await post_hit(ctx, hit.blob_id, rank, caption)


async def post_hit(ctx: HandlerContext, blob_id: int, rank: int, caption: str) -> None:
    """Upload a found image as it is stored (an upload keeps its own format)."""
    blob = await ctx.store.blobs.get(blob_id)
    if blob is None:
        return
    extension = blob.name.rsplit(".", 1)[-1].lower() if "." in blob.name else "png"
    await ctx.responder.upload(await ctx.store.blobs.read(blob_id), f"match-{rank}.{extension}", blob.mime,
                               caption=caption)


async def detect_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    engine = ctx.settings.images.detect_engine
    require(ctx, engine, ctx.t("object_detection"))
    labels = parse_labels(str(args.get("labels") or ""))
    if not labels:
        raise UserFacingError("detect_labels")
    files = image_attachments(event, args.get("image"))
    if not files:
        raise UserFacingError("image_needed", command="detect")
    image = await read_image(ctx, files[0])
    threshold = float(args["threshold"]) if args.get("threshold") is not None else ctx.settings.images.detect_threshold
    result: Detection = await run_vision(ctx, engine, DetectRequest(image.png, labels, threshold))
    if not result.boxes:
        await ctx.responder.send(ctx.t("detect_none", labels=", ".join(labels)))
        return
    lines = [f"{box.label} {box.score:.0%} ({', '.join(str(round(v)) for v in box.box)})" for box in result.boxes]
    await ctx.responder.upload(result.annotated, "detected.png", "image/png",
                               caption=ctx.t("detect_found", count=len(result.boxes)) + "\n" + "\n".join(lines))


IMAGE = Option("image", OptionType.ATTACHMENT, "opt_image")


def register(router: Router) -> None:
    router.on(EventKind.IMAGE)(image_uploaded)
    router.command("classify", "cmd_classify",
                   options=[Option("labels", OptionType.TEXT, "opt_labels", required=True), IMAGE],
                   examples=("/classify cat, dog, bird (attach a photo)", "/classify 猫, 狗"))(classify_command)
    router.command("find", "cmd_find", options=[Option("query", OptionType.TEXT, "opt_find_query"), IMAGE],
                   examples=("/find a red car", "/find (attach an image to find similar ones)"))(find_command)
    router.command("detect", "cmd_detect",
                   options=[Option("labels", OptionType.TEXT, "opt_labels", required=True), IMAGE,
                            Option("threshold", OptionType.NUMBER, "opt_threshold", min_value=0, max_value=1)],
                   examples=("/detect cat, remote control (attach a photo)",))(detect_command)
