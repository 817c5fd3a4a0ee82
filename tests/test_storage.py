"""The database: migrations match the models, upgrades keep data, SQLite runs in WAL mode."""

from __future__ import annotations

import json
import sqlite3

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from autobots.storage.database import create_db_engine, migrate
from autobots.storage.tables import Base
from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.server import start_server
from tests.support.sse import read_events


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


def test_upgrading_a_first_revision_database_keeps_its_rows(tmp_path, user_id):
    """A database made by the first release, with data in it, upgrades to the newest schema and
    the server then serves that data."""
    from alembic import command

    from autobots.storage.database import alembic_config

    db_file = tmp_path / "database.sqlite"
    engine = create_db_engine(f"sqlite:///{db_file}")
    cfg = alembic_config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0001")
    engine.dispose()
    flow = wf.autonomous(wf.assistant())
    with sqlite3.connect(db_file) as db:
        db.execute(
            "INSERT INTO sessions (session_id, user_id, name, flow_config, created_at) VALUES (?, ?, ?, ?, ?)",
            ("old-session", user_id, None, json.dumps(flow), "2025-01-01 10:00:00"),
        )
        for msg_id, role, content in (("m1", "user", "old question"), ("m2", "assistant", "old answer")):
            db.execute(
                "INSERT INTO messages (msg_id, session_id, user_id, role, content, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (msg_id, "old-session", user_id, role, content, "2025-01-01 10:00:01"),
            )
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'run_events'").fetchone() == (0,)

    srv = start_server(tmp_path)  # migrates the file to the newest revision at start
    try:
        msgs = srv.get("/api/messages", user_id=user_id, session_id="old-session").json()["data"]
        assert [(m["msg_id"], m["content"]) for m in msgs] == [("m1", "old question"), ("m2", "old answer")]
        sessions = srv.get("/api/sessions", user_id=user_id).json()["data"]
        assert [s["session_id"] for s in sessions] == ["old-session"]
    finally:
        srv.stop()
    with sqlite3.connect(db_file) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'run_events'").fetchone() == (1,)
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] != "0001"


def test_two_first_messages_of_one_new_session_both_land_in_it(server, llm, user_id):
    """Two clients may send the first message of the same new session at once."""
    from concurrent.futures import ThreadPoolExecutor

    llm.latency = 0.3
    llm.responder = lambda body: "Both fine. TERMINATE"
    body = {
        "message": wf.message(user_id, "hi", "shared-new-session"),
        "flow_config": wf.autonomous(wf.assistant()),
    }
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: server.post("/api/messages", body), range(8)))
    assert [r.status_code for r in results] == [200] * 8, [r.text for r in results]
    msgs = server.get("/api/messages", user_id=user_id, session_id="shared-new-session").json()["data"]
    assert len(msgs) == 16
    assert len(server.get("/api/sessions", user_id=user_id).json()["data"]) == 1


def test_a_batch_with_rows_of_a_deleted_run_still_stores_the_other_runs_rows(tmp_path, user_id):
    """The event writer stores many runs' rows in one transaction: a run deleted mid-flight (its
    session cleared) must not cost the others their events and calls."""
    from datetime import UTC, datetime

    from autobots.schemas.chat import Message, Session
    from autobots.storage.database import make_session_factory
    from autobots.storage.repository import Repository

    engine = create_db_engine(f"sqlite:///{tmp_path / 'b.sqlite'}")
    migrate(engine)
    repo = Repository(make_session_factory(engine))
    flow = wf.autonomous(wf.assistant())
    for sid in ("keep", "drop"):
        session = Session(session_id=sid, user_id=user_id, flow_config=flow)
        repo.start_run(f"run-{sid}", Message(user_id=user_id, session_id=sid, content="q"), session)
    assert repo.delete_user_sessions(user_id, "drop") is True  # the user cleared it mid-run
    call = {
        "agent": "a",
        "model": "m",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "total_tokens": 2,
        "cost_usd": "0",
        "price_known": True,
        "cached": False,
        "latency_s": 0.1,
        "started_at": datetime.now(UTC),
        "error": None,
    }
    repo.add_events_and_calls(
        [("run-drop", 1, "status", {}), ("run-keep", 1, "status", {"status": "running"})],
        [("run-drop", "drop", call), ("run-keep", "keep", call)],
    )
    assert repo.events_after("run-keep", 0) == [(1, "status", {"status": "running"})]
    assert len(repo.llm_calls("run-keep")) == 1
    assert repo.events_after("run-drop", 0) == [] and repo.llm_calls("run-drop") == []
    assert repo.finish_run("run-drop", "cancelled", None) is False


def fill_revision_0003(url: str, user_id: str) -> dict[str, int]:
    """A database at revision 0003 (global session ids) with a session, its messages, a run with
    events and an LLM call, a gallery item and an API key; returns the row counts."""
    from alembic import command
    from sqlalchemy import text

    from autobots.storage.database import alembic_config

    engine = create_db_engine(url)
    cfg = alembic_config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0003")
    flow = json.dumps(wf.autonomous(wf.assistant()))
    session = json.dumps({"session_id": "old-s", "user_id": user_id, "flow_config": json.loads(flow)})
    rows = [
        (
            "INSERT INTO sessions (session_id, user_id, flow_config, created_at) VALUES ('old-s', :u, :f, '2026-01-01')",
            {"f": flow},
        ),
        (
            "INSERT INTO messages (msg_id, session_id, user_id, role, content, created_at) VALUES ('m1', 'old-s', :u, 'user', 'q', '2026-01-01')",
            {},
        ),
        (
            "INSERT INTO messages (msg_id, session_id, user_id, role, content, created_at) VALUES ('m2', 'old-s', :u, 'assistant', 'a', '2026-01-01')",
            {},
        ),
        (
            "INSERT INTO runs (run_id, session_id, user_id, user_msg_id, assistant_msg_id, status, started_at, ended_at) VALUES ('r1', 'old-s', :u, 'm1', 'm2', 'completed', '2026-01-01', '2026-01-01')",
            {},
        ),
        (
            "INSERT INTO llm_calls (run_id, session_id, user_id, agent, model, prompt_tokens, completion_tokens, total_tokens, cost_usd, price_known, cached, latency_s, started_at) VALUES ('r1', 'old-s', :u, 'a', 'm', 3, 4, 7, '0.01', true, false, 0.1, '2026-01-01')",
            {},
        ),
        (
            "INSERT INTO gallery (gallery_id, session, messages, tags, created_at) VALUES ('g1', :s, '[]', '[]', '2026-01-01')",
            {"s": session},
        ),
        ("INSERT INTO users (user_id, is_admin, created_at) VALUES (:u, false, '2026-01-01')", {}),
        (
            "INSERT INTO api_keys (key_id, user_id, digest, created_at) VALUES ('key_1', :u, 'd', '2026-01-01')",
            {},
        ),
    ]
    rows += [
        (
            f"INSERT INTO run_events (run_id, seq, type, data, created_at) VALUES ('r1', {i}, 'status', :d, '2026-01-01')",
            {"d": json.dumps({"status": s})},
        )
        for i, s in enumerate(("queued", "running", "completed"), start=1)
    ]
    with engine.begin() as conn:
        for sql, params in rows:
            conn.execute(text(sql), {"u": user_id, **params})
    engine.dispose()
    return {
        "sessions": 1,
        "messages": 2,
        "runs": 1,
        "run_events": 3,
        "llm_calls": 1,
        "gallery": 1,
        "api_keys": 1,
    }


def count_rows(url: str, tables: list[str]) -> dict[str, int]:
    from sqlalchemy import text

    engine = create_db_engine(url)
    with engine.connect() as conn:
        counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables}
    engine.dispose()
    return counts


def check_upgrade_from_0003(url: str, workdir, user_id: str) -> None:
    expected = fill_revision_0003(url, user_id)
    srv = start_server(workdir, env={"AUTOBOTS_DATABASE_URL": url})  # migrates to the newest revision
    try:
        msgs = srv.get("/api/messages", user_id=user_id, session_id="old-s").json()["data"]
        assert [m["msg_id"] for m in msgs] == ["m1", "m2"]
        assert srv.get("/api/runs/r1", user_id=user_id).json()["data"]["status"] == "completed"
        events = [e.data["status"] for e in read_events(f"{srv.url}/api/runs/r1/events")]
        assert events == ["queued", "running", "completed"]
        # The same id is now free for another user, and theirs is another session.
        other = "other-" + user_id
        r = srv.post(
            "/api/sessions",
            {
                "user_id": other,
                "session": {
                    "user_id": other,
                    "session_id": "old-s",
                    "flow_config": wf.autonomous(wf.assistant()),
                },
            },
        )
        assert r.status_code == 200, r.text
        assert len(srv.get("/api/messages", user_id=user_id, session_id="old-s").json()["data"]) == 2
    finally:
        srv.stop()
    counts = count_rows(url, list(expected))
    assert counts == {**expected, "sessions": 2}


def test_upgrading_to_per_user_ids_keeps_every_row_on_sqlite(tmp_path, user_id):
    check_upgrade_from_0003(f"sqlite:///{tmp_path / 'database.sqlite'}", tmp_path, user_id)
