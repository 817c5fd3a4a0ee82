"""saved workflows (each save a new version) and users' skill libraries; sessions and runs record
the workflow and version they ran

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("workflow_id", sa.String(length=100), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id"),
        sa.UniqueConstraint("user_id", "name", name="uq_workflows_user_name"),
    )
    op.create_index("ix_workflows_user", "workflows", ["user_id", "updated_at"])
    op.create_table(
        "workflow_versions",
        sa.Column("workflow_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("flow", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", "version"),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.workflow_id"], ondelete="CASCADE"),
    )
    op.create_table(
        "skills",
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "name"),
    )
    for table in ("sessions", "runs"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("workflow_id", sa.String(length=100), nullable=True))
            batch.add_column(sa.Column("workflow_version", sa.Integer(), nullable=True))
    op.create_index("ix_runs_user_started", "runs", ["user_id", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_user_started", table_name="runs")
    for table in ("runs", "sessions"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("workflow_version")
            batch.drop_column("workflow_id")
    op.drop_table("skills")
    op.drop_table("workflow_versions")
    op.drop_index("ix_workflows_user", table_name="workflows")
    op.drop_table("workflows")
