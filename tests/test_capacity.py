"""The server holds a hundred blocking `POST /api/messages` at once, each for its whole run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from tests.support import workflows as wf


def test_a_hundred_blocking_requests_are_all_in_flight_at_once(server, llm, user_id):
    llm.latency = 3.0  # every run holds its request for at least this long
    llm.responder = lambda body: "Done. TERMINATE"
    flow = wf.autonomous(wf.assistant())

    def ask(i: int) -> requests.Response:
        body = {"message": wf.message(user_id, f"question {i}"), "flow_config": flow}
        return requests.post(server.url + "/api/messages", json=body, timeout=120)

    with ThreadPoolExecutor(100) as pool:
        replies = list(pool.map(ask, range(100)))
    assert [r.status_code for r in replies] == [200] * 100, [r.text for r in replies if r.status_code != 200][
        :3
    ]
    assert sorted(r.json()["metadata"]["metadata"]["messages"][0]["content"] for r in replies) == sorted(
        f"question {i}" for i in range(100)
    )
    # All hundred runs waited on the LLM at the same moment: none was queued behind another.
    assert llm.max_in_flight == 100
    assert server.get("/api/health").status_code == 200
