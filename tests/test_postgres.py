"""The same server on PostgreSQL (by URL), for when one machine is not enough.

Runs against the PostgreSQL on 127.0.0.1:5432 when there is one; CI sets
AUTOBOTS_REQUIRE_POSTGRES=1 where it provides one, and then a missing server fails.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from autobots.storage.database import alembic_config
from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.scripted_llm import ScriptedLLM
from tests.support.server import RunningServer, start_server

ADMIN_URL = os.environ.get(
    "AUTOBOTS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database of the test suite's own, dropped afterwards."""
    name = f"autobots_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        if os.environ.get("AUTOBOTS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"AUTOBOTS_REQUIRE_POSTGRES=1 but PostgreSQL is not reachable: {exc}")
        pytest.skip(f"no PostgreSQL at {ADMIN_URL}")
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh database for this module, dropped afterwards."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def pg_server(
    pg_url: str, llm_server: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    env = {
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
        "AUTOBOTS_DATABASE_URL": pg_url,
    }
    srv = start_server(tmp_path_factory.mktemp("pg"), env=env)
    yield srv
    srv.stop()


def test_a_chat_its_cost_and_the_gallery_on_postgres(pg_server, pg_url, llm, user_id):
    assert not pg_server.db_path.exists()  # nothing went to SQLite
    llm.queue("Stored in Postgres. TERMINATE")
    r = pg_server.post(
        "/api/messages",
        {"message": wf.message(user_id, "where?"), "flow_config": wf.autonomous(wf.assistant())},
    )
    assert r.status_code == 200, r.text
    sid = r.json()["metadata"]["session_id"]
    msgs = pg_server.get("/api/messages", user_id=user_id, session_id=sid).json()["data"]
    assert [m["content"] for m in msgs] == ["where?", "Stored in Postgres."]
    item = pg_server.post(
        "/api/sessions/publish",
        {"user_id": user_id, "session": {"user_id": user_id, "session_id": sid}, "tags": ["pg"]},
    ).json()["data"]
    assert [i["id"] for i in pg_server.get("/api/gallery", tag="pg").json()["data"]] == [item["id"]]
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        tokens = conn.execute(text("SELECT sum(total_tokens) FROM llm_calls")).scalar()
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    counted = llm.counted()
    assert tokens == counted["prompt_tokens"] + counted["completion_tokens"]
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_live_run_events_on_postgres(pg_server, llm, user_id):
    from tests.support.sse import read_events

    llm.queue("Live from Postgres. TERMINATE")
    body = {"message": wf.message(user_id, "live?"), "flow_config": wf.autonomous(wf.assistant())}
    run = pg_server.post("/api/runs", body).json()["data"]
    events = list(read_events(f"{pg_server.url}/api/runs/{run['run_id']}/events"))
    assert events[-1].data == {"status": "completed"}
    replay = list(read_events(f"{pg_server.url}/api/runs/{run['run_id']}/events", last_event_id=2))
    assert [e.id for e in replay] == [e.id for e in events][2:]


def test_upgrading_to_per_user_ids_keeps_every_row_on_postgres(tmp_path, user_id):
    from tests.test_storage import check_upgrade_from_0003

    with fresh_database() as url:
        check_upgrade_from_0003(url, tmp_path, user_id)
