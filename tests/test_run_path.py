"""The run path's shortcuts keep what users get: the registered model client sends the endpoint
the request AutoGen's own client would and reads the same answer; the event writer's flush,
run from any thread, leaves every row put before it stored, in order; ending a run twice
stores one answer; each thread's LLM calls go through a connection pool of its own; agents sharing
their thread's AutoGen wrapper call with their own config. (Their speed is bench/overhead.py's to show.)"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
from autogen.oai.client import OpenAIClient

from autobots.llm.endpoints import shared_http_client
from autobots.llm.model_client import Endpoint, ServerModelClient, client_entry
from autobots.llm.transport import PerThreadTransport
from autobots.schemas.chat import Message, Session
from autobots.services.event_writer import EventWriter
from autobots.storage.database import create_db_engine, make_session_factory, migrate
from autobots.storage.repository import Repository
from tests.support import workflows as wf


def _params() -> dict:
    return {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [
            {"role": "system", "content": "You are primary_assistant."},
            {"role": "user", "content": "What is 2+2?", "name": "userproxy"},
        ],
    }


def test_the_registered_client_sends_what_autogen_s_own_client_sends(llm):
    llm.queue("4 TERMINATE", "4 TERMINATE")
    kwargs = {
        "api_key": "sk-test",
        "base_url": llm.base_url,
        "http_client": shared_http_client(),
        "max_retries": 0,
    }
    ours = ServerModelClient(client_entry({"model": "gpt-4o-mini", **kwargs}))
    theirs = OpenAIClient(openai.OpenAI(**kwargs))
    mine, reference = ours.create(_params()), theirs.create(_params())
    sent, expected = llm.served[0], llm.served[1]
    assert sent.body == expected.body  # the same JSON body
    assert sent.authorization == expected.authorization == "Bearer sk-test"
    assert ours.message_retrieval(mine) == theirs.message_retrieval(reference) == ["4 TERMINATE"]
    assert mine.usage == reference.usage and mine.usage.prompt_tokens == sent.prompt_tokens


def test_an_entry_carries_its_key_in_one_value_that_never_shows_it():
    entry = client_entry({"model": "m", "api_key": "sk-SECRET", "base_url": "http://127.0.0.1:9/v1"})
    assert entry["model_client_cls"] == "ServerModelClient" and "api_key" not in entry
    endpoint = next(v for v in entry.values() if isinstance(v, Endpoint))
    assert endpoint.kwargs["api_key"] == "sk-SECRET" and "SECRET" not in repr(entry)
    # With AutoGen's disk cache asked for, the entry stays plain (its cache key is the entry).
    assert client_entry({"model": "m", "api_key": "k"}, opaque=False)["api_key"] == "k"


def test_flush_from_many_threads_stores_every_row_put_before_it_in_order(tmp_path, user_id):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    migrate(engine)
    repo = Repository(make_session_factory(engine))
    runs = [f"run-{i}" for i in range(8)]
    for i, run_id in enumerate(runs):
        session = Session(session_id=f"s{i}", user_id=user_id, flow_config=wf.autonomous(wf.assistant()))
        repo.start_run(run_id, Message(user_id=user_id, session_id=f"s{i}", content="q"), session)
    published: list[tuple[str, int]] = []
    writer = EventWriter(
        repo, interval_s=0.05, published=lambda batch: published.extend((r, s) for r, s, *_ in batch)
    )
    missing: list[str] = []

    def emit(run_id: str) -> None:
        for seq in range(1, 41):
            writer.put_event(run_id, seq, "status", {"n": seq})
            if seq % 10 == 0:
                writer.flush()  # everything this run put so far is stored now
                if [s for s, *_ in repo.events_after(run_id, 0, 1000)] != list(range(1, seq + 1)):
                    missing.append(f"{run_id} at {seq}")

    threads = [threading.Thread(target=emit, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert missing == []
    for run_id in runs:
        assert [s for s, *_ in repo.events_after(run_id, 0, 1000)] == list(range(1, 41))
        assert [s for r, s in published if r == run_id] == list(range(1, 41))  # published once, in order


def test_ending_a_run_twice_stores_one_answer(tmp_path, user_id):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'f.sqlite'}")
    migrate(engine)
    repo = Repository(make_session_factory(engine))
    session = Session(session_id="s", user_id=user_id, flow_config=wf.autonomous(wf.assistant()))
    question = Message(user_id=user_id, session_id="s", content="q")
    repo.start_run("r", question, session)
    first = Message(user_id=user_id, session_id="s", role="assistant", content="first")
    second = Message(user_id=user_id, session_id="s", role="assistant", content="second")
    assert repo.finish_run("r", "completed", {"llm_calls": 1}, None, first) is True
    assert repo.finish_run("r", "cancelled", None, None, second) is False  # the first one stands
    run = repo.get_run("r")
    assert run is not None and run["status"] == "completed" and run["assistant_msg_id"] == first.msg_id
    assert [m.content for m in repo.load_messages(user_id, "s")] == ["q", "first"]


def test_each_thread_keeps_its_own_connection_and_a_gone_thread_s_is_closed():
    """Per-thread pools (llm/transport.py): every call is answered, a thread reuses its one
    connection call after call, and pools of threads that ended are closed."""
    peers: list[tuple[str, int]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as an LLM endpoint

        def log_message(self, *_args: object) -> None:
            return None

        def do_GET(self) -> None:
            peers.append(self.client_address)
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tls = httpx.create_ssl_context()
    transport = PerThreadTransport(tls)
    client = httpx.Client(transport=transport, verify=tls)
    url = f"http://127.0.0.1:{server.server_port}/"
    answers: list[bool] = []

    def calls() -> None:
        for _ in range(5):
            answers.append(client.get(url).json()["ok"])

    try:
        threads = [threading.Thread(target=calls) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [True] * 20
        assert len(set(peers)) == 4  # one connection per thread, reused for its 5 calls
        assert transport.pools() == 4
        late = threading.Thread(target=calls)  # the next new thread closes the ended ones' pools
        late.start()
        late.join()
        assert transport.pools() == 1 and len(set(peers)) == 5
    finally:
        client.close()
        server.shutdown()
    assert transport.pools() == 0


def test_runs_of_different_llm_configs_each_call_with_their_own(server, llm, user_id):
    """Agents of one config share their thread's AutoGen wrapper; none may call with another's."""
    llm.responder = lambda body: "ok TERMINATE"
    asked = [("gpt-4o-mini", 0.1), ("gpt-4o", 0.7), ("gpt-4o-mini", 0.7), ("gpt-4o-mini", 0.1)]
    for model, temperature in asked:
        agent = wf.assistant(model=model)
        agent["config"]["llm_config"]["temperature"] = temperature
        body = {"message": wf.message(user_id, "hi"), "flow_config": wf.autonomous(agent)}
        r = server.post("/api/messages", body)
        assert r.status_code == 200, r.text
    assert [(s.body["model"], s.body["temperature"]) for s in llm.served] == asked
