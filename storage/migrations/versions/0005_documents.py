"""Knowledge bases: documents, their chunks (pgvector + full-text search), and message embeddings.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "document",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("format", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("pages", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("chunks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("chars", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("added_by", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channel.id"], ondelete="CASCADE",
                                name=op.f("fk_document_channel_id_channel")),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"], ondelete="CASCADE",
                                name=op.f("fk_document_workspace_id_workspace")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document")),
    )
    op.create_index(op.f("ix_document_workspace_id_sha256"), "document", ["workspace_id", "sha256"])
    op.create_table(
        "doc_chunk",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=True),
        sa.Column("ord", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("section", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("embedding", Vector(), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channel.id"], ondelete="CASCADE",
                                name=op.f("fk_doc_chunk_channel_id_channel")),
        sa.ForeignKeyConstraint(["document_id"], ["document.id"], ondelete="CASCADE",
                                name=op.f("fk_doc_chunk_document_id_document")),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"], ondelete="CASCADE",
                                name=op.f("fk_doc_chunk_workspace_id_workspace")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_doc_chunk")),
    )
    op.create_index(op.f("ix_doc_chunk_document_id"), "doc_chunk", ["document_id"])
    op.create_index(op.f("ix_doc_chunk_workspace_id_channel_id"), "doc_chunk", ["workspace_id", "channel_id"])
    op.execute("CREATE INDEX ix_doc_chunk_fts ON doc_chunk USING gin (to_tsvector('simple'::regconfig, search_text))")
    op.create_table(
        "message_embedding",
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("embedding", Vector(), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channel.id"], ondelete="CASCADE",
                                name=op.f("fk_message_embedding_channel_id_channel")),
        sa.ForeignKeyConstraint(["message_id"], ["message.id"], ondelete="CASCADE",
                                name=op.f("fk_message_embedding_message_id_message")),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"], ondelete="CASCADE",
                                name=op.f("fk_message_embedding_workspace_id_workspace")),
        sa.PrimaryKeyConstraint("message_id", "model", name=op.f("pk_message_embedding")),
    )
    op.create_index(op.f("ix_message_embedding_channel_id_model"), "message_embedding", ["channel_id", "model"])


def downgrade() -> None:
    op.drop_table("message_embedding")
    op.drop_table("doc_chunk")  # its indexes (and the runtime HNSW ones) go with it
    op.drop_index(op.f("ix_document_workspace_id_sha256"), table_name="document")
    op.drop_table("document")
