"""Images: an embedding (CLIP) per uploaded or generated image, for image search.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "image",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=True),
        sa.Column("blob_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("params", postgresql.JSONB(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("embedding", Vector(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("source IN ('upload', 'generated')", name=op.f("ck_image_source")),
        sa.CheckConstraint("(model IS NULL) = (embedding IS NULL)", name=op.f("ck_image_vector_with_model")),
        sa.ForeignKeyConstraint(["blob_id"], ["blob.id"], ondelete="CASCADE", name=op.f("fk_image_blob_id_blob")),
        sa.ForeignKeyConstraint(["channel_id"], ["channel.id"], ondelete="CASCADE",
                                name=op.f("fk_image_channel_id_channel")),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"], ondelete="CASCADE",
                                name=op.f("fk_image_workspace_id_workspace")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image")),
    )
    op.create_index(op.f("ix_image_workspace_id_created_at"), "image", ["workspace_id", "created_at"])
    op.create_index(op.f("ix_image_blob_id"), "image", ["blob_id"])


def downgrade() -> None:
    op.drop_table("image")  # its indexes (and the runtime HNSW ones) go with it
