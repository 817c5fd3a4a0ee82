"""The database: migrations match the models, upgrades keep data, SQLite runs in WAL mode."""

from __future__ import annotations

import sqlite3

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from autobots.storage.database import create_db_engine, migrate
from autobots.storage.tables import Base
from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.server import start_server


def test_migrations_describe_exactly_the_models(tmp_path):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models changed without a migration: {diff}"


def test_sqlite_uses_wal(tmp_path):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_restart_and_upgrade_keep_every_row(llm, tmp_path, user_id):
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm.base_url}
    first = start_server(tmp_path, env=env)
    try:
        llm.queue("Kept. TERMINATE")
        r = first.post(
            "/api/messages",
            {"message": wf.message(user_id, "keep this"), "flow_config": wf.autonomous(wf.assistant())},
        )
        sid = r.json()["metadata"]["session_id"]
        first.post(
            "/api/sessions/publish",
            {"user_id": user_id, "session": {"user_id": user_id, "session_id": sid}, "tags": ["t"]},
        )
    finally:
        first.stop()
    with sqlite3.connect(first.db_path) as db:
        before = {
            t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("sessions", "messages", "runs", "llm_calls", "gallery")
        }
    assert before == {"sessions": 1, "messages": 2, "runs": 1, "llm_calls": 1, "gallery": 1}

    second = start_server(tmp_path, env=env)  # runs the migrations again on the same file
    try:
        msgs = second.get("/api/messages", user_id=user_id, session_id=sid).json()["data"]
        assert [m["content"] for m in msgs] == ["keep this", "Kept."]
        assert len(second.get("/api/gallery", tag="t").json()["data"]) == 1
    finally:
        second.stop()
