"""The ORM schema: one class per table. Alembic migrations must match it (a test checks)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Base(DeclarativeBase):
    """Declarative base with a naming convention so constraint names are stable across migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Workspace(Base):
    """A Slack team, a Discord guild, or the local web chat."""

    __tablename__ = "workspace"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(Text)
    external_id: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    locale: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class AppUser(Base):
    """A person in one workspace, with the bot's role for them."""

    __tablename__ = "app_user"
    __table_args__ = (
        UniqueConstraint("workspace_id", "external_id"),
        CheckConstraint("role IN ('user', 'admin')", name="role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text, server_default="user")
    locale: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime] = _created()
    last_seen: Mapped[datetime] = _created()


class Channel(Base):
    """A channel, DM or web session inside a workspace."""

    __tablename__ = "channel"
    __table_args__ = (UniqueConstraint("workspace_id", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    is_dm: Mapped[bool] = mapped_column(server_default=text("false"))


class Conversation(Base):
    """A chat history for one thread key; at most one is active per channel and key."""

    __tablename__ = "conversation"
    __table_args__ = (
        Index(
            "ix_conversation_channel_id_key_active",
            "channel_id",
            "key",
            "active",
            unique=True,
            postgresql_where=text("active"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    channel_id: Mapped[int] = mapped_column(ForeignKey("channel.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id", ondelete="SET NULL"))
    key: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[datetime] = _created()


class Message(Base):
    __tablename__ = "message"
    __table_args__ = (Index(None, "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    attachments: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB(none_as_null=True))
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    created_at: Mapped[datetime] = _created()


class Blob(Base):
    """A file kept on disk under the blob directory, named by its SHA-256."""

    __tablename__ = "blob"
    __table_args__ = (
        Index(None, "sha256"),
        CheckConstraint("kind IN ('upload', 'generated')", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int | None] = mapped_column(ForeignKey("workspace.id", ondelete="SET NULL"))
    sha256: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    mime: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(Text, server_default="upload")
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class Job(Base):
    """One engine job as the pool saw it."""

    __tablename__ = "job"
    __table_args__ = (Index(None, "queued_at"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    engine: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    progress: Mapped[float] = mapped_column(Float, server_default=text("0"))
    queued_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    queue_s: Mapped[float | None] = mapped_column(Float)
    run_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)


class Usage(Base):
    """The usage ledger: one row per billable engine call."""

    __tablename__ = "usage"
    __table_args__ = (Index(None, "created_at"), Index(None, "user_id", "created_at"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    workspace_id: Mapped[int | None] = mapped_column(ForeignKey("workspace.id", ondelete="SET NULL"))
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channel.id", ondelete="SET NULL"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id", ondelete="SET NULL"))
    engine: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    tokens_in: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    tokens_out: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    seconds: Mapped[float] = mapped_column(Float, server_default=text("0"))
    cost: Mapped[Decimal] = mapped_column(Numeric(14, 6), server_default=text("0"))
    created_at: Mapped[datetime] = _created()


class ProcessedEvent(Base):
    """Platform event ids already handled, so redeliveries are dropped."""

    __tablename__ = "processed_event"
    __table_args__ = (PrimaryKeyConstraint("platform", "event_id"), Index(None, "created_at"))

    platform: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    workspace_id: Mapped[int | None] = mapped_column(ForeignKey("workspace.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    created_at: Mapped[datetime] = _created()


class ScopedSetting(Base):
    """A per-workspace or per-channel override of a setting, changed by admin commands."""

    __tablename__ = "scoped_setting"
    __table_args__ = (
        UniqueConstraint("scope", "scope_id", "key"),
        CheckConstraint("scope IN ('workspace', 'channel')", name="scope"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(Text)
    scope_id: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(Text)
    value: Mapped[Any] = mapped_column(JSONB)
    updated_by: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = _created()


class ConversationMemory(Base):
    """A conversation's running summary and how far into its messages the summary reaches."""

    __tablename__ = "conversation_memory"

    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversation.id", ondelete="CASCADE"), primary_key=True
    )
    summary: Mapped[str] = mapped_column(Text, server_default=text("''"))
    summarized_upto: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))  # last message id folded in
    updated_at: Mapped[datetime] = _created()


class EntityFact(Base):
    """A fact about a named person, project or thing, remembered for a conversation or a workspace."""

    __tablename__ = "entity_fact"
    __table_args__ = (Index(None, "workspace_id", "entity_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"))
    entity: Mapped[str] = mapped_column(Text)
    entity_key: Mapped[str] = mapped_column(Text)  # lower-cased, for matching mentions
    fact: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class Installation(Base):
    """A platform app installed in a workspace (Slack's OAuth flow). `sealed` is encrypted by the
    adapter: tokens never reach the database in clear text."""

    __tablename__ = "installation"
    __table_args__ = (UniqueConstraint("platform", "enterprise_id", "team_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(Text)
    enterprise_id: Mapped[str] = mapped_column(Text, server_default=text("''"))
    team_id: Mapped[str] = mapped_column(Text)
    sealed: Mapped[str] = mapped_column(Text)
    installed_at: Mapped[datetime] = _created()


class OAuthState(Base):
    """One-time `state` values of OAuth install flows in progress."""

    __tablename__ = "oauth_state"

    state: Mapped[str] = mapped_column(Text, primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AppState(Base):
    """Small facts the service keeps about itself (e.g. the hash of the last command sync)."""

    __tablename__ = "app_state"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[Any] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = _created()


class Document(Base):
    """A document in a knowledge base: a channel's (channel_id set) or the whole workspace's (NULL).

    `sha256` is of the extracted text, so the same document uploaded twice in one scope is found.
    """

    __tablename__ = "document"
    __table_args__ = (Index(None, "workspace_id", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channel.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(Text)
    pages: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    chunks: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    chars: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    added_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class DocChunk(Base):
    """One passage of a document, with its embedding and the text full-text search reads.

    `workspace_id`/`channel_id` repeat the document's scope so every search filters on this table alone.
    `embedding` has no fixed dimension: each embedding model gets its own partial HNSW index over
    `embedding::vector(dim)` (made at runtime by `DocumentRepository.ensure_index`), so switching models
    never mixes vectors. `search_text` is the text with Chinese split into words (jieba), lower-cased.
    """

    __tablename__ = "doc_chunk"
    __table_args__ = (Index(None, "document_id"), Index(None, "workspace_id", "channel_id"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("document.id", ondelete="CASCADE"))
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channel.id", ondelete="CASCADE"))
    ord: Mapped[int] = mapped_column(Integer)
    page: Mapped[int | None] = mapped_column(Integer)
    section: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    search_text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    embedding: Mapped[Any] = mapped_column(Vector())


class MessageEmbedding(Base):
    """A chat message's embedding, for /similar and /topics (filled lazily, per embedding model)."""

    __tablename__ = "message_embedding"
    __table_args__ = (PrimaryKeyConstraint("message_id", "model"), Index(None, "channel_id", "model"))

    message_id: Mapped[int] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(Text)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    channel_id: Mapped[int] = mapped_column(ForeignKey("channel.id", ondelete="CASCADE"))
    embedding: Mapped[Any] = mapped_column(Vector())



class Image(Base):
    """An uploaded or generated image's embedding (CLIP), for /similar-image and search by description.

    The bytes are a `blob`; `params` are the generation settings of a generated one. Like `doc_chunk`,
    `embedding` has no fixed dimension and each `model` gets its own partial HNSW index at runtime
    (`ImageRepository.ensure_index`), so vectors of different models are never compared. `model` and
    `embedding` are both NULL for an image kept while no CLIP engine was configured (`set_vector` fills them).
    """

    __tablename__ = "image"
    __table_args__ = (
        Index(None, "workspace_id", "created_at"),
        Index(None, "blob_id"),
        CheckConstraint("source IN ('upload', 'generated')", name="source"),
        CheckConstraint("(model IS NULL) = (embedding IS NULL)", name="vector_with_model"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channel.id", ondelete="CASCADE"))
    blob_id: Mapped[int] = mapped_column(ForeignKey("blob.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    model: Mapped[str | None] = mapped_column(Text)
    embedding: Mapped[Any | None] = mapped_column(Vector())
    created_at: Mapped[datetime] = _created()


# Full-text search over the jieba-segmented text; queries must use the same expression.
FTS_CONFIG = "simple"
Index("ix_doc_chunk_fts", func.to_tsvector(text(f"'{FTS_CONFIG}'::regconfig"), DocChunk.search_text),
      postgresql_using="gin")
