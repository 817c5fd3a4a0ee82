"""Workflow configs in the shape clients send, for tests and benchmarks."""

from __future__ import annotations

from typing import Any


def llm_config(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"config_list": [{"model": model, "api_key": None}], "temperature": 0, **extra}


def userproxy(name: str = "userproxy", **config: Any) -> dict[str, Any]:
    cfg = {
        "name": name,
        "llm_config": False,
        "human_input_mode": "NEVER",
        "max_consecutive_auto_reply": 5,
        "code_execution_config": False,
        **config,
    }
    return {"type": "userproxy", "config": cfg}


def assistant(name: str = "primary_assistant", model: str = "gpt-4o-mini", **config: Any) -> dict[str, Any]:
    cfg = {
        "name": name,
        "llm_config": llm_config(model),
        "human_input_mode": "NEVER",
        "max_consecutive_auto_reply": 5,
        "system_message": f"You are {name}.",
        **config,
    }
    return {"type": "assistant", "config": cfg}


def link(agent: dict[str, Any], role: str) -> dict[str, Any]:
    return {"agent": agent, "link": {"agent_type": role}}


def autonomous(*receivers: dict[str, Any], sender: dict[str, Any] | None = None) -> dict[str, Any]:
    sender = sender or userproxy()
    return {
        "name": "autonomous test",
        "type": "autonomous",
        "sender": sender,
        "receiver": receivers[0] if len(receivers) == 1 else list(receivers),
        "agents": [link(sender, "sender"), *(link(r, "receiver") for r in receivers)],
    }


def sequential(*receivers: dict[str, Any], summary_method: str = "last") -> dict[str, Any]:
    sender = userproxy()
    return {
        "name": "sequential test",
        "type": "sequential",
        "agents": [link(sender, "sender"), *(link(r, "receiver") for r in receivers)],
        "summary_method": summary_method,
    }


def groupchat(
    *members: dict[str, Any], method: str = "round_robin", max_round: int = 4, **manager: Any
) -> dict[str, Any]:
    manager_agent = {
        "type": "groupchat",
        "config": {
            "name": "group_manager",
            "llm_config": llm_config(),
            "speaker_selection_method": method,
            "max_round": max_round,
            "allow_repeat_speaker": False,
            **manager,
        },
        "agents": list(members),
    }
    return {
        "name": "groupchat test",
        "type": "groupchat",
        "agents": [link(manager_agent, "receiver")],
    }


def message(user_id: str, content: str, session_id: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"user_id": user_id, "role": "user", "content": content}
    if session_id:
        msg["session_id"] = session_id
    return msg
