"""How long a run will wait for the embedded model: its place in the model's queue, or the load.

A run on the embedded model can sit for a minute with nothing to show: the model is loading, or
other runs' calls are ahead of its own (the model answers one at a time). The page asks here
while a run waits (`GET /api/runs/<id>/wait`) and says "model loading, about 20 s" or "2 requests
ahead of yours, about 40 s" instead of "may be loading".

Only about the caller's own run: the run is found as every run request finds it (another user's
is a 404, like a missing one), and the model server is asked about that run's id only; what comes
back about others is counts, never their ids or text (`llm/embedded/_queue.py`). The server asked
is the one on this machine; a run executed by a worker on another machine gets `model: null`.
"""

from __future__ import annotations

from typing import Any

from ..llm.embedded import is_embedded, model_wait
from ..llm.endpoints import server_has_endpoint
from ..schemas.runs import RunStatus
from ..settings import Settings
from .runs import RunManager


class RunWaits:
    def __init__(self, runs: RunManager, settings: Settings) -> None:
        self._runs = runs
        self._settings = settings

    def for_run(self, user_id: str | None, run_id: str) -> dict[str, Any]:
        """`status`: the run's; `model`: where its calls stand at the embedded model (state,
        requests ahead, estimate_s, loading), None unless the run runs on it and a model server
        is (or is being started) here."""
        stored = self._runs.describe(user_id, run_id)
        status = stored["status"]
        model = None
        if status == RunStatus.RUNNING and self._may_use_embedded(stored.get("flow")):
            model = model_wait(self._settings.embedded, run_id)
        return {"run_id": run_id, "status": status, "model": model}

    def _may_use_embedded(self, flow: Any) -> bool:
        """It names an embedded model, or the server has no endpoint (so the default and every
        model without a usable key are answered by the embedded one)."""
        return not server_has_endpoint(self._settings) or any(is_embedded(m) for m in _models(flow))


def _models(node: Any) -> list[str]:
    """Every `model` named anywhere in a stored flow."""
    if isinstance(node, dict):
        found = [node["model"]] if isinstance(node.get("model"), str) else []
        return found + [m for value in node.values() for m in _models(value)]
    if isinstance(node, list):
        return [m for value in node for m in _models(value)]
    return []
