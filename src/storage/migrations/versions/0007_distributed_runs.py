"""what a worker needs to hold a run another process queued, and files every process can serve

Runs gain whether a human may be asked (`interactive`), the worker holding them and its last
heartbeat (a run whose worker died is found by any live process), and the prompt a human is
asked now (any API process answers it). `session_files` keeps what code left in a session's
work dir, so an API process on another machine serves it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("interactive", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("worker_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("input_prompt", sa.Text(), nullable=True))
        batch.add_column(sa.Column("input_prompt_id", sa.String(length=100), nullable=True))
    op.create_index("ix_runs_status_heartbeat", "runs", ["status", "heartbeat_at"])
    op.create_table(
        "session_files",
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=1000), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "session_id", "name"),
        sa.ForeignKeyConstraint(
            ["user_id", "session_id"],
            ["sessions.user_id", "sessions.session_id"],
            name="fk_session_files_session",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("session_files")
    op.drop_index("ix_runs_status_heartbeat", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        for column in ("input_prompt_id", "input_prompt", "heartbeat_at", "worker_id", "interactive"):
            batch.drop_column(column)
