"""Embedded local models: the offline default LLM, served OpenAI-compatibly for AutoGen.

Usage by the web/core layer::

    settings = EmbeddedSettings.model_validate(config.get("embedded", {}))
    if is_embedded(entry["model"]):
        entry = embedded_endpoint(entry["model"], settings).config_entry()

``model_wait(settings, run_id)`` tells how long a run's calls wait for the model (its queue, its
loading). See ``server`` for the design (one managed llama.cpp server per machine) and ``weights``
for how the weights are found, assembled and verified.
"""

from .errors import EmbeddedModelError
from .registry import EMBEDDED_PREFIX, is_embedded, known_models
from .server import EmbeddedEndpoint, embedded_endpoint, installed_models, shutdown
from .settings import EmbeddedSettings
from .status import model_wait

__all__ = [
    "EMBEDDED_PREFIX",
    "EmbeddedEndpoint",
    "EmbeddedModelError",
    "EmbeddedSettings",
    "embedded_endpoint",
    "installed_models",
    "is_embedded",
    "known_models",
    "model_wait",
    "shutdown",
]
