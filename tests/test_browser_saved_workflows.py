"""The chat page's saved workflows, in a real Chromium: save the workflow edited in the picker,
see it listed, start a chat from it (the session and its runs record its id and version), and
save an edit as its next version."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser_support import ChatPage, launch_browser, new_chat_page
from tests.support import workflows as wf
from tests.support.scripted_llm import ScriptedLLM
from tests.support.server import RunningServer


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture
def chat(browser: Any, server: RunningServer, llm: ScriptedLLM, user_id: str) -> Iterator[ChatPage]:
    page = new_chat_page(browser, server, user_id)
    yield page
    page.page.context.close()
    assert not page.errors, page.errors


def test_save_a_workflow_and_start_a_chat_from_it(
    chat: ChatPage, server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    flow = wf.autonomous(wf.assistant(system_message="You are the saved team."))
    flow["name"] = "Page team"
    page = chat.open().page
    chat.paste_workflow(flow)
    page.locator("#save-workflow").click()
    row = page.locator(".saved-workflow", has_text="Page team")
    row.wait_for()
    assert "v1" in row.inner_text()
    saved = [w for w in server.get("/api/workflows", user_id=user_id).json()["data"] if not w["builtin"]]
    assert [w["name"] for w in saved] == ["Page team"]
    wid = saved[0]["id"]

    # Saving an edit of the same name is its next version.
    flow["agents"][1]["agent"]["config"]["system_message"] = "You are the saved team, edited."
    page.locator("#workflow-json").fill(json.dumps(flow, indent=2))
    page.locator("#save-workflow").click()
    page.locator(".saved-workflow", has_text="v2").wait_for()

    row.get_by_role("button", name="Use").click()
    page.locator(".saved-workflows .field-status", has_text="Page team").wait_for()
    llm.queue("From the saved team. TERMINATE")
    chat.send("hello saved team")
    answer = chat.wait_for_answer()
    assert "From the saved team." in answer.inner_text()
    assert llm.served[-1].system.startswith("You are the saved team, edited.")
    session_id = chat.current_session_id()
    session = next(
        s
        for s in server.get("/api/sessions", user_id=user_id).json()["data"]
        if s["session_id"] == session_id
    )
    assert (session["workflow_id"], session["workflow_version"]) == (wid, 2)
    stored = server.get("/api/messages", user_id=user_id, session_id=session_id).json()["data"]
    run_id = stored[-1]["metadata"]["run_id"]
    run = server.get(f"/api/runs/{run_id}", user_id=user_id).json()["data"]
    assert (run["workflow_id"], run["workflow_version"]) == (wid, 2)
