"""Text analytics over what the channel has said (kept in PostgreSQL): `/sentiment`, `/topics`, `/similar`.

The maths lives in `handlers.textstats`; this module wires it to the embeddings engine, the chat
engine (cluster names; sentiment when the embeddings are unsure) and the channel's messages.
"""

from __future__ import annotations

from collections import Counter

from bot.context import HandlerContext
from bot.errors import UserFacingError
from bot.events import IncomingEvent
from bot.router import Option, OptionType, Router
from handlers.docs import embed
from handlers.summarize import chat_once
from handlers.textstats import (
    Embed,
    SentimentClassifier,
    cluster,
    fallback_prompt,
    naming_prompt,
    parse_fallback,
    parse_names,
    representatives,
    topic_vectors,
)

MIN_TOPIC_MESSAGES = 6
EXCERPT = 160


def embedder(ctx: HandlerContext) -> Embed:
    """`textstats`' embed callable over the embeddings engine."""

    async def run(texts: list[str], kind: str) -> list[list[float]]:
        vectors: list[list[float]] = []
        batch = ctx.settings.docs.embed_batch
        for start in range(0, len(texts), batch):
            vectors.extend((await embed(ctx, texts[start:start + batch], kind)).vectors)  # type: ignore[arg-type]
        return vectors

    return run


# -- /sentiment -------------------------------------------------------------------------------------------------------


async def sentiment_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    text = str(ctx.state["args"].get("text") or "").strip()
    if not text:
        raise UserFacingError("sentiment_empty")
    docs = ctx.settings.docs
    classifier: SentimentClassifier = ctx.services.features.setdefault("sentiment", SentimentClassifier())
    [result] = await classifier.classify(text, embedder(ctx))
    label, method = result.label, "embeddings"
    if docs.sentiment_fallback and (result.unsure or result.confidence < docs.sentiment_min_confidence):
        answer = parse_fallback((await chat_once(ctx, fallback_prompt(text), max_tokens=8, temperature=0)).text)
        if answer is not None:
            label, method = answer, "chat"
    await ctx.responder.send(ctx.t("sentiment_result", label=ctx.t(f"sentiment_{label}"),
                                   confidence=round(result.confidence * 100), method=ctx.t(f"by_{method}")))


# -- messages of the channel ------------------------------------------------------------------------------------------


async def embed_missing(ctx: HandlerContext, model: str, limit: int) -> None:
    """Embed the channel's newest messages that have no vector of `model` yet."""
    assert ctx.identity is not None
    missing = await ctx.store.message_vectors.missing(ctx.identity.channel_pk, model, limit)
    if missing:
        vectors = await embedder(ctx)([text for _, text in missing], "passage")
        await ctx.store.message_vectors.add(ctx.identity.workspace_pk, ctx.identity.channel_pk, model,
                                            [(mid, vec) for (mid, _), vec in zip(missing, vectors, strict=True)])


async def similar_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    text = str(ctx.state["args"].get("text") or "").strip()
    if not text:
        raise UserFacingError("similar_empty")
    query = await embed(ctx, [text], "query")
    await embed_missing(ctx, query.model, ctx.settings.docs.topics_messages * 5)
    hits = await ctx.store.message_vectors.similar(ctx.identity.workspace_pk, ctx.identity.channel_pk, query.model,
                                                   query.vectors[0], ctx.settings.docs.similar_k)
    if not hits:
        await ctx.responder.send(ctx.t("similar_none"))
        return
    lines = []
    for n, hit in enumerate(hits, 1):
        excerpt = " ".join(hit.content.split())
        excerpt = excerpt if len(excerpt) <= EXCERPT else excerpt[:EXCERPT] + "…"
        meta = hit.meta or {}
        link = await ctx.responder.link(str(meta["channel"]), str(meta["ref"])) if meta.get("ref") else None
        when = hit.created_at.strftime("%Y-%m-%d %H:%M")
        lines.append(ctx.t("similar_line", n=n, score=f"{hit.score:.2f}", text=excerpt, when=when)
                     + (f" <{link}>" if link else ""))
    await ctx.responder.card(ctx.t("similar_title", text=text[:80]), "\n".join(lines))


# -- /topics ----------------------------------------------------------------------------------------------------------


async def topics_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    n = ctx.state["args"].get("n")
    limit = ctx.settings.docs.topics_messages
    rows = await ctx.store.message_vectors.recent_texts(ctx.identity.channel_pk, limit)
    if len(rows) < MIN_TOPIC_MESSAGES:
        raise UserFacingError("topics_too_few", count=len(rows), needed=MIN_TOPIC_MESSAGES)
    texts = [text for _, text in rows]
    await ctx.responder.progress(0.1, ctx.t("topics_embedding", count=len(texts)))
    vectors = await topic_vectors(texts, embedder(ctx))
    labels = cluster(vectors, int(n) if n else None)
    samples = representatives(vectors, labels, texts)
    locale = ctx.locale or "en"
    naming = await chat_once(ctx, naming_prompt(samples, locale), max_tokens=200, temperature=0)
    names = parse_names(naming.text, samples.keys(), locale)
    sizes = Counter(labels)
    lines = []
    for cluster_id, size in sizes.most_common():
        examples = " / ".join(s[:60] for s in samples.get(cluster_id, [])[:2])
        lines.append(ctx.t("topics_line", name=names.get(cluster_id, str(cluster_id)), count=size,
                           share=round(100 * size / len(labels)), examples=examples))
    await ctx.responder.card(ctx.t("topics_title", count=len(sizes), messages=len(labels)), "\n".join(lines))


def register(router: Router) -> None:
    router.command("sentiment", "cmd_sentiment", options=[Option("text", OptionType.TEXT, "opt_text", required=True)],
                   examples=("/sentiment The deploy went great, thanks all!", "/sentiment 这个问题太烦人了"))(
        sentiment_command)
    router.command("topics", "cmd_topics",
                   options=[Option("n", OptionType.INTEGER, "opt_topics_n", min_value=2, max_value=12)],
                   examples=("/topics", "/topics 4"))(topics_command)
    router.command("similar", "cmd_similar", options=[Option("text", OptionType.TEXT, "opt_text", required=True)],
                   examples=("/similar deploy failed on staging", "/similar 午饭吃什么"))(similar_command)
