"""identity: users, API keys, page sign-ins; the user of each LLM call (for daily budgets)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_id"),
        sa.UniqueConstraint("digest"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "web_sessions",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.key_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    # Every stored call keeps its run's user: existing rows are filled from their runs.
    with op.batch_alter_table("llm_calls") as batch:
        batch.add_column(sa.Column("user_id", sa.String(length=200), nullable=True))
    op.execute(
        "UPDATE llm_calls SET user_id = (SELECT runs.user_id FROM runs WHERE runs.run_id = llm_calls.run_id)"
    )
    op.create_index("ix_llm_calls_user_started", "llm_calls", ["user_id", "started_at"])
    op.create_index("ix_runs_user_status", "runs", ["user_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_runs_user_status", table_name="runs")
    op.drop_index("ix_llm_calls_user_started", table_name="llm_calls")
    with op.batch_alter_table("llm_calls") as batch:
        batch.drop_column("user_id")
    op.drop_table("web_sessions")
    op.drop_table("api_keys")
    op.drop_table("users")
