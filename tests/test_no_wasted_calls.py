"""No LLM call is spent only on saying TERMINATE where the chat can end without it.

A user proxy without an LLM that has nothing to say (no code to run, no human answer, an empty
default reply) ends the chat instead of sending an empty message that the model would answer
with "TERMINATE". Every count here is what the scripted endpoint received over HTTP; the
code-running cases (a reply to code that ran ends the chat; a failed run is still followed up)
are in test_code_execution.py, in real sandboxes.
"""

from __future__ import annotations

from tests.support import workflows as wf
from tests.support.scripted_llm import ScriptedLLM
from tests.support.server import RunningServer


def ask(server: RunningServer, user_id: str, content: str, flow: dict) -> dict:
    r = server.post("/api/messages", {"message": wf.message(user_id, content), "flow_config": flow})
    assert r.status_code == 200, r.text
    return r.json()


def test_an_answer_without_terminate_ends_the_chat_after_one_call(
    server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    llm.queue("17 * 23 = 391", "TERMINATE")  # the second is what AutoGen would have asked for
    body = ask(server, user_id, "What is 17*23?", wf.autonomous(wf.assistant()))
    assert llm.counted()["calls"] == 1
    assert body["message"] == "17 * 23 = 391"
    said = [(m["sender"], m["content"]) for m in body["metadata"]["metadata"]["messages"]]
    assert said == [("userproxy", "What is 17*23?"), ("primary_assistant", "17 * 23 = 391")]


def test_a_sequential_workflow_makes_one_call_per_step(
    server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    llm.queue("- Bicycles date from 1817.", "The bicycle dates from 1817.", "TERMINATE", "TERMINATE")
    flow = wf.sequential(wf.assistant("researcher"), wf.assistant("writer"))
    body = ask(server, user_id, "A sentence on the bicycle", flow)
    assert llm.counted()["calls"] == 2
    assert body["message"] == "The bicycle dates from 1817."
    assert len(body["metadata"]["metadata"]["messages"]) == 4  # two hand-overs, two answers


def test_parallel_receivers_each_answer_once(server: RunningServer, llm: ScriptedLLM, user_id: str) -> None:
    llm.responder = lambda body: "My view, in one line."
    flow = wf.autonomous(wf.assistant("optimist"), wf.assistant("skeptic"))
    body = ask(server, user_id, "Move to the cloud?", flow)
    assert llm.counted()["calls"] == 2
    assert body["message"].count("My view, in one line.") == 2


def test_a_default_reply_the_config_gives_is_still_sent(
    server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    """A proxy with something to say (its default_auto_reply) says it: that is the config's
    choice, and before any code ran it asks for work, not for a formality."""
    llm.queue("Let me think.", "Done: 42. TERMINATE")
    flow = wf.autonomous(wf.assistant(), sender=wf.userproxy(default_auto_reply="Go on."))
    body = ask(server, user_id, "six times seven", flow)
    assert llm.counted()["calls"] == 2
    assert body["message"] == "Done: 42."
    assert [m["content"] for m in body["metadata"]["metadata"]["messages"]][2] == "Go on."


def test_a_group_chat_member_without_an_llm_keeps_its_turn(
    server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    """In a group chat the manager gives the turns: a member proxy with nothing to say does not
    end the chat. Round robin over planner, member_proxy, critic, started by the proxy: critic,
    planner, the proxy again (nothing to say), critic."""
    critic_calls = []

    def respond(body: dict) -> str:
        if "You are critic." in body["messages"][0]["content"]:
            critic_calls.append(1)
            return "One weakness." if len(critic_calls) == 1 else "Good now. TERMINATE"
        return "Plan v2."

    llm.responder = respond
    flow = wf.groupchat(
        wf.assistant("planner"), wf.userproxy("member_proxy"), wf.assistant("critic"), max_round=8
    )
    body = ask(server, user_id, "plan it", flow)
    assert llm.counted()["calls"] == 3
    senders = [m["sender"] for m in body["metadata"]["metadata"]["messages"]]
    assert senders == ["member_proxy", "critic", "planner", "member_proxy", "critic"], senders
