"""Handing a stored run to a worker in another process: what the queue message carries.

The database holds what a worker needs to rebuild a run (the question, the workflow as sent,
with credential references but never keys: `runs.flow`). What it must not hold travels in the
queue message, encrypted with the server's secret (Fernet, `auth/secretbox.py`): the API keys the
request gave inline, entry by entry, and the session history the API process read for it. So every
process of one deployment must share the secret (`secret_key`, AUTOBOTS_SECRET_KEY); a worker
that cannot read a message fails that run with a message saying so. Stored credentials are
resolved again by the worker, for the run's user, as every run resolves them.
"""

from __future__ import annotations

import json
from typing import Any

from ..agents.workflows import Turn
from ..auth.secretbox import SecretBox, Unreadable
from ..schemas.chat import Message
from ..schemas.workflow import AgentWorkFlowConfig
from .chat import PreparedRun
from .errors import BadRequest
from .teams import TeamGate


class Unsealable(ValueError):
    """The queue message cannot be read with this process's secret."""


def seal(box: SecretBox, run: PreparedRun) -> str:
    payload = {
        "keys": [entry.api_key for _, entry in run.flow.endpoints()],
        "history": [[t.role, t.content] for t in run.history],
    }
    return box.encrypt(json.dumps(payload, separators=(",", ":")))


def restore(
    box: SecretBox, teams: TeamGate, run: dict[str, Any], message: Message, sealed: str
) -> PreparedRun:
    """The run as its API process prepared it, from its row, its question and the message."""
    try:
        payload = json.loads(box.decrypt(sealed))
    except (Unreadable, ValueError) as exc:
        raise Unsealable(
            "the run's queue message cannot be read with this worker's secret: every process must "
            "share one secret_key (AUTOBOTS_SECRET_KEY)"
        ) from exc
    flow = AgentWorkFlowConfig.model_validate(run["flow"])
    for (_, entry), key in zip(flow.endpoints(), payload.get("keys") or [], strict=False):
        if key is not None and entry.credential is None:
            entry.api_key = key
    try:
        runtime = teams.runtime_flow(message.user_id, flow)
    except BadRequest as exc:  # a credential deleted, or the outbound rule changed, since it queued
        raise Unsealable(str(exc)) from exc
    history = [Turn(role, content) for role, content in payload.get("history") or []]
    return PreparedRun(run["run_id"], message, flow, history, runtime=runtime)
