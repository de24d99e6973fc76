"""Chat memory: running summaries and entity facts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_memory",
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("summarized_upto", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"], ondelete="CASCADE",
                                name=op.f("fk_conversation_memory_conversation_id_conversation")),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_conversation_memory")),
    )
    op.create_table(
        "entity_fact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("entity_key", sa.Text(), nullable=False),
        sa.Column("fact", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"], ondelete="CASCADE",
                                name=op.f("fk_entity_fact_conversation_id_conversation")),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"], ondelete="CASCADE",
                                name=op.f("fk_entity_fact_workspace_id_workspace")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entity_fact")),
    )
    op.create_index(op.f("ix_entity_fact_workspace_id_entity_key"), "entity_fact", ["workspace_id", "entity_key"])


def downgrade() -> None:
    op.drop_index(op.f("ix_entity_fact_workspace_id_entity_key"), table_name="entity_fact")
    op.drop_table("entity_fact")
    op.drop_table("conversation_memory")
