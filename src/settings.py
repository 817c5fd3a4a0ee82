"""Server settings: `src/web/config.json` first, then environment overrides.

Settings are read once at start-up and passed down explicitly, so that tests can run several
servers with different settings in one machine and no module reads the environment on its own.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .execution.settings import ExecutionSettings
from .llm.embedded.settings import EmbeddedSettings


class RunLimits(BaseModel):
    """Hard caps on one run, so that no workflow can loop forever or run up a bill unseen."""

    model_config = ConfigDict(extra="ignore")

    max_llm_calls: int = Field(40, ge=1, le=10_000)
    max_run_seconds: float = Field(600, gt=0, le=86_400)
    # Earlier messages of the session given to the agents as context for a follow-up.
    history_messages: int = Field(20, ge=0, le=1000)


class LLMSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    request_timeout_s: float = Field(120, gt=0)
    # The model an agent without a config_list gets when the server has OPENAI_* credentials;
    # without them, the embedded model is the default.
    default_model: str = "gpt-4o-mini"


class RunSettings(BaseModel):
    """Live runs: how many run at once, how long a human has to answer, SSE keep-alive."""

    model_config = ConfigDict(extra="ignore")

    pool_size: int = Field(128, ge=1, le=4096)
    input_timeout_s: float = Field(300, gt=0)
    heartbeat_s: float = Field(15, gt=0)


class ClientSettings(BaseModel):
    """Defaults for the client scripts in `src/web/testing/`."""

    model_config = ConfigDict(extra="ignore")

    server_url: str = "http://127.0.0.1:8081"
    user_id: str = "guestuser@autobots.local"


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    database_url: str = "sqlite:///database.sqlite"
    server_threads: int = Field(256, ge=1, le=4096)
    max_request_bytes: int = Field(1_048_576, ge=1024)
    limits: RunLimits = Field(default_factory=RunLimits)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    runs: RunSettings = Field(default_factory=RunSettings)
    code_execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
    client: ClientSettings = Field(default_factory=ClientSettings)
    # Server credentials come only from the environment and are never written anywhere.
    openai_api_key: SecretStr | None = Field(default=None, exclude=True)
    openai_base_url: str | None = None


def default_config_path() -> Path:
    return Path(str(resources.files("autobots.web").joinpath("config.json")))


def load_settings(config_path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build settings from a JSON file and `AUTOBOTS_*` / `OPENAI_*` environment variables."""
    env = dict(os.environ if env is None else env)
    path = Path(config_path or env.get("AUTOBOTS_CONFIG") or default_config_path())
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SystemExit(f"config file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise SystemExit(f"config file {path} is not valid JSON: {exc}") from exc
    if url := env.get("AUTOBOTS_DATABASE_URL"):
        raw["database_url"] = url
    if key := env.get("OPENAI_API_KEY"):
        raw["openai_api_key"] = key
    if base := env.get("OPENAI_BASE_URL"):
        raw["openai_base_url"] = base
    return Settings.model_validate(raw)
