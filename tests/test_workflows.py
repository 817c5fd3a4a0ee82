"""Each workflow type, end to end through the HTTP API, against the scripted LLM."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

from tests.support import workflows as wf


def ask(server, user_id, content, flow, session_id=None):
    body = {"message": wf.message(user_id, content, session_id), "flow_config": flow}
    return server.post("/api/messages", body)


def by_system(replies: dict[str, str]):
    """Answer by the agent's system message: '<name>' -> reply text."""

    def respond(body):
        system = body["messages"][0]["content"]
        for name, text in replies.items():
            if f"You are {name}." in system:
                return text
        return "unexpected TERMINATE"

    return respond


def test_autonomous_answer_usage_and_inner_messages(server, llm, user_id):
    llm.queue("The answer is 42. TERMINATE")
    r = ask(server, user_id, "What is six times seven?", wf.autonomous(wf.assistant()))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] is True
    assert body["message"] == "The answer is 42."
    saved = body["metadata"]
    assert saved["role"] == "assistant" and saved["content"] == "The answer is 42."
    meta = saved["metadata"]
    said = [(m["sender"], m["recipient"], m["content"]) for m in meta["messages"]]
    assert said == [
        ("userproxy", "primary_assistant", "What is six times seven?"),
        ("primary_assistant", "userproxy", "The answer is 42. TERMINATE"),
    ]
    counted = llm.counted()
    usage = meta["usage"]
    assert counted["calls"] == usage["llm_calls"] == 1
    assert usage["prompt_tokens"] == counted["prompt_tokens"]
    assert usage["completion_tokens"] == counted["completion_tokens"]
    assert usage["total_tokens"] == counted["prompt_tokens"] + counted["completion_tokens"]
    # gpt-4o-mini in AutoGen's price table: $0.00015 / 1k prompt, $0.0006 / 1k completion.
    expected = (
        Decimal("0.00015") * counted["prompt_tokens"] + Decimal("0.0006") * counted["completion_tokens"]
    ) / 1000
    assert Decimal(usage["total_cost_usd"]) == expected
    assert usage["per_agent"]["primary_assistant"]["calls"] == 1
    assert usage["per_model"]["gpt-4o-mini"]["total_tokens"] == usage["total_tokens"]
    assert meta["timing"]["duration_s"] > 0 and meta["timing"]["start"] < meta["timing"]["end"]
    assert meta["messages"][1]["usage"]["completion_tokens"] == counted["completion_tokens"]
    assert meta["models"] == {"requested": ["gpt-4o-mini"], "answered": ["gpt-4o-mini"], "notes": []}


def test_two_receivers_run_concurrently_and_answers_are_combined(server, llm, user_id):
    llm.latency = 1.5  # long enough to overlap even on a loaded machine
    llm.responder = by_system({"alpha": "Alpha says red. TERMINATE", "beta": "Beta says blue. TERMINATE"})
    flow = wf.autonomous(wf.assistant("alpha"), wf.assistant("beta"))
    r = ask(server, user_id, "Pick a colour", flow)
    assert r.status_code == 200, r.text
    # (Other tests' abandoned calls may still be in flight: look only at this run's two.)
    mine = [s for s in llm.served if "You are alpha." in s.system or "You are beta." in s.system]
    first, second = sorted(mine, key=lambda s: s.started)
    assert second.started < first.ended, "the two receivers' LLM calls did not overlap"
    answer = r.json()["message"]
    assert "### alpha\nAlpha says red." in answer and "### beta\nBeta says blue." in answer
    meta = r.json()["metadata"]["metadata"]
    assert set(meta["usage"]["per_agent"]) == {"alpha", "beta"}
    assert meta["usage"]["llm_calls"] == 2 == llm.counted()["calls"]


def test_sequential_hands_each_chat_the_task_and_earlier_summaries(server, llm, user_id):
    llm.responder = by_system(
        {"researcher": "Fact: the sky is blue. TERMINATE", "writer": "A poem about a blue sky. TERMINATE"}
    )
    flow = wf.sequential(wf.assistant("researcher"), wf.assistant("writer"))
    r = ask(server, user_id, "Write about the sky", flow)
    assert r.status_code == 200, r.text
    assert r.json()["message"] == "A poem about a blue sky."
    writer_call = next(s for s in llm.served if "You are writer." in s.system)
    prompt = writer_call.last_user_text
    assert "Write about the sky" in prompt and "Fact: the sky is blue." in prompt
    meta = r.json()["metadata"]["metadata"]
    assert meta["parts"] == {"researcher": "Fact: the sky is blue.", "writer": "A poem about a blue sky."}


def test_sequential_reflection_summary_calls_are_counted(server, llm, user_id):
    llm.responder = lambda body: (
        "Summary line." if "Summarize" in str(body["messages"][-1]["content"]) else "Work done. TERMINATE"
    )
    flow = wf.sequential(
        wf.assistant("researcher"), wf.assistant("writer"), summary_method="reflection_with_llm"
    )
    r = ask(server, user_id, "Do it", flow)
    assert r.status_code == 200, r.text
    usage = r.json()["metadata"]["metadata"]["usage"]
    counted = llm.counted()
    # Two answers and one reflection: the last chat's summary is handed to nobody, so no call
    # is spent on it.
    assert counted["calls"] == 3
    assert sum("Summarize" in str(s.body["messages"][-1]["content"]) for s in llm.served) == 1
    assert usage["llm_calls"] == 3
    assert usage["prompt_tokens"] == counted["prompt_tokens"]
    assert usage["completion_tokens"] == counted["completion_tokens"]


def test_groupchat_round_robin(server, llm, user_id):
    llm.responder = by_system({"planner": "Plan: step one.", "critic": "Looks good. TERMINATE"})
    flow = wf.groupchat(
        wf.userproxy(max_consecutive_auto_reply=0), wf.assistant("planner"), wf.assistant("critic")
    )
    r = ask(server, user_id, "Make a plan", flow)
    assert r.status_code == 200, r.text
    meta = r.json()["metadata"]["metadata"]
    speakers = [m["sender"] for m in meta["messages"]]
    assert speakers[:3] == ["userproxy", "planner", "critic"]
    assert r.json()["message"] == "Looks good."
    assert meta["usage"]["llm_calls"] == llm.counted()["calls"] == 2


def test_groupchat_auto_selection_calls_are_counted_for_the_manager(server, llm, user_id):
    def respond(body):
        text = str(body["messages"][-1]["content"])
        if "Read the above conversation" in text or "select the next role" in str(
            body["messages"][0]["content"]
        ):
            return "critic" if "Plan: step one." in str(body["messages"]) else "planner"
        return by_system({"planner": "Plan: step one.", "critic": "Approved. TERMINATE"})(body)

    llm.responder = respond
    flow = wf.groupchat(wf.assistant("planner"), wf.assistant("critic"), method="auto", max_round=5)
    r = ask(server, user_id, "Make a plan", flow)
    assert r.status_code == 200, r.text
    meta = r.json()["metadata"]["metadata"]
    usage = meta["usage"]
    counted = llm.counted()
    assert usage["llm_calls"] == counted["calls"]
    assert usage["prompt_tokens"] == counted["prompt_tokens"]
    assert usage["per_agent"]["group_manager"]["calls"] >= 1  # speaker selection is billed
    assert [m["sender"] for m in meta["messages"]][1:3] == ["planner", "critic"]


def test_groupchat_random_selection_runs(server, llm, user_id):
    llm.responder = lambda body: "Done. TERMINATE"
    flow = wf.groupchat(
        wf.assistant("a1"), wf.assistant("a2"), wf.assistant("a3"), method="random", max_round=3
    )
    r = ask(server, user_id, "Go", flow)
    assert r.status_code == 200, r.text
    senders = {m["sender"] for m in r.json()["metadata"]["metadata"]["messages"][1:]}
    assert senders <= {"a1", "a2", "a3"} and senders


def test_groupchat_agent_inside_autonomous_workflow(server, llm, user_id):
    llm.responder = by_system({"planner": "Plan ready.", "critic": "Fine. TERMINATE"})
    manager = wf.groupchat(wf.assistant("planner"), wf.assistant("critic"))["agents"][0]["agent"]
    flow = wf.autonomous(manager)
    r = ask(server, user_id, "Plan a trip", flow)
    assert r.status_code == 200, r.text
    meta = r.json()["metadata"]["metadata"]
    assert [m["sender"] for m in meta["messages"]] == ["userproxy", "planner", "critic"]
    assert r.json()["message"] == "Fine."


def test_follow_up_sees_the_earlier_exchange(server, llm, user_id):
    llm.queue("Your name is Ada. TERMINATE", "You told me your name is Ada. TERMINATE")
    flow = wf.autonomous(wf.assistant())
    first = ask(server, user_id, "My name is Ada. Remember it.", flow)
    session_id = first.json()["metadata"]["session_id"]
    second = ask(server, user_id, "What is my name?", flow, session_id=session_id)
    assert second.status_code == 200, second.text
    sent = [m["content"] for m in llm.served[-1].body["messages"]]
    assert "My name is Ada. Remember it." in sent
    assert any("Your name is Ada." in c for c in sent)
    assert sent[-1] == "What is my name?"
    # Only what was said in this run is its transcript.
    assert len(second.json()["metadata"]["metadata"]["messages"]) == 2


def test_follow_up_without_flow_config_uses_the_sessions_workflow(server, llm, user_id):
    llm.queue("First. TERMINATE", "Second. TERMINATE")
    first = ask(server, user_id, "one", wf.autonomous(wf.assistant()))
    session_id = first.json()["metadata"]["session_id"]
    r = server.post("/api/messages", {"message": wf.message(user_id, "two", session_id)})
    assert r.status_code == 200, r.text
    assert r.json()["message"] == "Second."


def test_unknown_model_costs_zero_and_says_so(server, llm, user_id):
    llm.queue("Hi. TERMINATE")
    r = ask(server, user_id, "hello", wf.autonomous(wf.assistant(model="my-local-model")))
    usage = r.json()["metadata"]["metadata"]["usage"]
    assert usage["total_cost"] == 0 and usage["total_tokens"] > 0
    assert any("my-local-model" in note and "0" in note for note in usage["cost_notes"])


def test_config_price_is_used_for_unknown_models(server, llm, user_id):
    llm.queue("Hi there friend. TERMINATE")
    agent = wf.assistant(model="priced-model")
    agent["config"]["llm_config"]["config_list"][0]["price"] = [0.001, 0.002]
    r = ask(server, user_id, "hello", wf.autonomous(agent))
    usage = r.json()["metadata"]["metadata"]["usage"]
    counted = llm.counted()
    expected = (
        Decimal("0.001") * counted["prompt_tokens"] + Decimal("0.002") * counted["completion_tokens"]
    ) / 1000
    assert Decimal(usage["total_cost_usd"]) == expected
    assert usage["cost_notes"] == []


def test_llm_calls_are_stored_per_run(server, llm, user_id):
    llm.queue("Stored. TERMINATE")
    r = ask(server, user_id, "store it", wf.autonomous(wf.assistant()))
    meta = r.json()["metadata"]["metadata"]
    with sqlite3.connect(server.db_path) as db:
        rows = db.execute(
            "SELECT agent, model, prompt_tokens, completion_tokens, cost_usd FROM llm_calls WHERE run_id = ?",
            (meta["run_id"],),
        ).fetchall()
        status = db.execute("SELECT status FROM runs WHERE run_id = ?", (meta["run_id"],)).fetchone()
    counted = llm.counted()
    assert rows == [
        (
            "primary_assistant",
            "gpt-4o-mini",
            counted["prompt_tokens"],
            counted["completion_tokens"],
            meta["usage"]["total_cost_usd"],
        )
    ]
    assert status == ("completed",)


def test_groupchat_workflow_with_a_manager_only_agent_uses_its_settings(server, llm, user_id):
    """The shape where members are the workflow's agents and the groupchat agent only configures
    the manager: its max_round and speaker selection apply."""
    llm.responder = by_system({"planner": "Plan step.", "critic": "Again."})  # never terminates
    manager = {
        "type": "groupchat",
        "config": {
            "name": "chair",
            "llm_config": wf.llm_config(),
            "speaker_selection_method": "round_robin",
            "max_round": 3,
        },
    }
    flow = {
        "name": "flat groupchat",
        "type": "groupchat",
        "agents": [
            wf.link(wf.userproxy(max_consecutive_auto_reply=0), "sender"),
            wf.link(wf.assistant("planner"), "receiver"),
            wf.link(wf.assistant("critic"), "receiver"),
            wf.link(manager, "receiver"),
        ],
    }
    r = ask(server, user_id, "Plan", flow)
    assert r.status_code == 200, r.text
    meta = r.json()["metadata"]["metadata"]
    assert [m["sender"] for m in meta["messages"]] == ["userproxy", "planner", "critic"]
    assert meta["usage"]["llm_calls"] == 2  # round robin: no selection calls; max_round 3 stops it


def test_a_groupchat_agent_running_as_a_team_needs_members(server, llm, user_id):
    lonely = {"type": "groupchat", "config": {"name": "lonely", "speaker_selection_method": "round_robin"}}
    r = ask(server, user_id, "hi", wf.autonomous(lonely))
    assert r.status_code == 400 and "needs at least 2 member agents" in r.json()["message"]


def test_sequential_uses_the_configured_sender(server, llm, user_id):
    llm.responder = by_system({"researcher": "Found it. TERMINATE"})
    flow = wf.sequential(wf.assistant("researcher"))
    flow["agents"][0] = wf.link(wf.userproxy("ada_proxy"), "sender")
    r = ask(server, user_id, "Look it up", flow)
    assert r.status_code == 200, r.text
    said = [(m["sender"], m["recipient"]) for m in r.json()["metadata"]["metadata"]["messages"]]
    assert said == [("ada_proxy", "researcher"), ("researcher", "ada_proxy")]


def test_custom_termination_word_ends_the_chat(server, llm, user_id):
    llm.queue("All set. DONE", "should never be asked")
    agent = wf.assistant()
    sender = wf.userproxy(is_termination_msg="DONE", max_consecutive_auto_reply=3)
    r = ask(server, user_id, "go", wf.autonomous(agent, sender=sender))
    assert r.status_code == 200, r.text
    assert llm.counted()["calls"] == 1
    assert r.json()["message"].startswith("All set.")


def test_two_group_chats_in_one_run_each_pay_for_their_own_speaker_selection(server, llm, user_id):
    def respond(body):
        text = str(body["messages"])
        if "Read the above conversation" in text or "select the next role" in text:
            return "a1" if "You are a1." in text else "b1"
        return by_system({"a1": "A done. TERMINATE", "b1": "B done. TERMINATE"})(body)

    llm.responder = respond

    def team(name, *members):
        return wf.groupchat(*(wf.assistant(m) for m in members), method="auto", name=name)["agents"][0][
            "agent"
        ]

    flow = wf.autonomous(team("team_a", "a1", "a2", "a3"), team("team_b", "b1", "b2", "b3"))
    r = ask(server, user_id, "Work", flow)
    assert r.status_code == 200, r.text
    per_agent = r.json()["metadata"]["metadata"]["usage"]["per_agent"]
    assert per_agent["team_a"]["calls"] == 1 and per_agent["team_b"]["calls"] == 1, per_agent
    assert per_agent["a1"]["calls"] == 1 and per_agent["b1"]["calls"] == 1
    assert sum(a["calls"] for a in per_agent.values()) == llm.counted()["calls"] == 4
