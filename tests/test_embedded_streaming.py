"""The embedded model streams by default: a live run on it shows the reply as it is written
(token events), and its usage is still the exact count the model server reports."""

from __future__ import annotations

from tests.support import workflows as wf
from tests.support.sse import read_events
from tests.test_embedded_api import SMALL, embedded_assistant, pytestmark, small_server  # noqa: F401


def test_a_live_run_on_the_embedded_model_streams_without_being_asked(small_server, user_id):  # noqa: F811
    agent = embedded_assistant(SMALL)
    assert "stream" not in agent["config"]["llm_config"]
    flow = wf.autonomous(agent, sender=wf.userproxy(max_consecutive_auto_reply=0))
    r = small_server.post("/api/runs", {"message": wf.message(user_id, "Say hello."), "flow_config": flow})
    assert r.status_code == 202, r.text
    events = list(
        read_events(f"{small_server.url}/api/runs/{r.json()['data']['run_id']}/events", timeout=300)
    )
    tokens = [e.data["delta"] for e in events if e.type == "token"]
    final = next(e.data["message"] for e in events if e.type == "final")
    said = [m["content"] for m in final["metadata"]["messages"] if m["sender"] == "primary_assistant"]
    assert len(tokens) > 3 and "".join(tokens).strip() == said[0].strip()
    usage = final["metadata"]["usage"]
    assert usage["llm_calls"] == 1 and usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 10
