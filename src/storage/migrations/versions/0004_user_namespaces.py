"""per-user namespaces: session and message ids unique per user; the gallery's owner and
publisher name; users' display names; stored provider credentials

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Session ids used to be global, so a user could learn which ids other users had (a 400 "already in
use") and could not reuse a name someone else had taken. Now the pair (user_id, session_id) is
the key, and messages and runs point at their session by that pair.

SQLite cannot change a constraint in place: its tables are rebuilt (Alembic's batch mode copies
every row into the new table), with foreign keys off for the migration's connection so that
dropping the old table cascades nothing (`database.migrate` sees to that, and checks every
foreign key afterwards). Other databases change the constraints in place.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Names SQLite's unnamed constraints get when reflected for the rebuild.
NAMING = {
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _rekey_sqlite()
    else:
        _rekey_in_place(bind)
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("display_name", sa.String(length=200), nullable=True))
    with op.batch_alter_table("gallery") as batch:
        batch.add_column(sa.Column("owner_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("publisher", sa.String(length=200), nullable=True))
    _fill_gallery_owners(bind)
    op.create_index("ix_gallery_owner_id", "gallery", ["owner_id"])
    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("base_url", sa.String(length=1000), nullable=True),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "name", name="uq_credentials_user_name"),
    )


def _rekey_sqlite() -> None:
    with op.batch_alter_table("sessions", recreate="always", naming_convention=NAMING) as batch:
        batch.drop_constraint("uq_sessions_session_id", type_="unique")
        batch.create_unique_constraint("uq_sessions_user_session", ["user_id", "session_id"])
    with op.batch_alter_table("messages", recreate="always", naming_convention=NAMING) as batch:
        batch.drop_constraint("fk_messages_session_id_sessions", type_="foreignkey")
        batch.drop_constraint("uq_messages_msg_id", type_="unique")
        batch.create_unique_constraint("uq_messages_user_msg", ["user_id", "msg_id"])
        batch.create_foreign_key(
            "fk_messages_session",
            "sessions",
            ["user_id", "session_id"],
            ["user_id", "session_id"],
            ondelete="CASCADE",
        )
    with op.batch_alter_table("runs", recreate="always", naming_convention=NAMING) as batch:
        batch.drop_constraint("fk_runs_session_id_sessions", type_="foreignkey")
        batch.create_foreign_key(
            "fk_runs_session",
            "sessions",
            ["user_id", "session_id"],
            ["user_id", "session_id"],
            ondelete="CASCADE",
        )


def _rekey_in_place(bind: Any) -> None:
    inspector = sa.inspect(bind)
    for table in ("messages", "runs"):
        for fk in inspector.get_foreign_keys(table):
            if fk["referred_table"] == "sessions" and fk["name"]:
                op.drop_constraint(fk["name"], table, type_="foreignkey")
    for table, column in (("sessions", "session_id"), ("messages", "msg_id")):
        for uq in inspector.get_unique_constraints(table):
            if uq["column_names"] == [column] and uq["name"]:
                op.drop_constraint(uq["name"], table, type_="unique")
    op.create_unique_constraint("uq_sessions_user_session", "sessions", ["user_id", "session_id"])
    op.create_unique_constraint("uq_messages_user_msg", "messages", ["user_id", "msg_id"])
    for table in ("messages", "runs"):
        op.create_foreign_key(
            f"fk_{table}_session",
            table,
            "sessions",
            ["user_id", "session_id"],
            ["user_id", "session_id"],
            ondelete="CASCADE",
        )


def _fill_gallery_owners(bind: Any) -> None:
    """A published copy's owner is its session's user (kept in the frozen copy)."""
    gallery = sa.table(
        "gallery",
        sa.column("gallery_id", sa.String),
        sa.column("session", sa.JSON),
        sa.column("owner_id", sa.String),
    )
    for gallery_id, session in bind.execute(sa.select(gallery.c.gallery_id, gallery.c.session)).all():
        data = json.loads(session) if isinstance(session, str) else session
        owner = data.get("user_id") if isinstance(data, dict) else None
        if isinstance(owner, str):
            bind.execute(gallery.update().where(gallery.c.gallery_id == gallery_id).values(owner_id=owner))


def downgrade() -> None:
    raise NotImplementedError("0004 changes keys: restore a backup to go back before it")
