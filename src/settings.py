"""Server settings: `src/web/config.json`, then `AUTOBOTS_*` environment variables over it.

Every key of the config can be set by an environment variable: `AUTOBOTS_` + the key path in
capitals, levels joined by `__` (`AUTOBOTS_AUTH__MODE=token`, `AUTOBOTS_LIMITS__MAX_LLM_CALLS=400`;
lists and objects as JSON). pydantic-settings reads them. An `AUTOBOTS_*` variable that names no
key is a start-up error naming it: a typo must not leave a limit or the sign-in silently off.

Settings are read once at start-up and passed down explicitly, so that tests can run several
servers with different settings in one machine and no module reads the environment on its own.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Iterator, Mapping
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from .auth.settings import AuthSettings
from .execution.settings import ExecutionSettings
from .llm.embedded.settings import EmbeddedSettings
from .llm.outbound import check_prefix

ENV_PREFIX = "AUTOBOTS_"
# `AUTOBOTS_*` variables that are not settings: the config file's path, the client scripts'
# server, user and key, and the test suite's own (`AUTOBOTS_REQUIRE_DOCKER=1`, `AUTOBOTS_TEST_*`).
RESERVED_ENV = ("AUTOBOTS_CONFIG", "AUTOBOTS_URL", "AUTOBOTS_USER_ID", "AUTOBOTS_API_KEY")
RESERVED_ENV_PREFIXES = ("AUTOBOTS_REQUIRE_", "AUTOBOTS_TEST_")


class SettingsError(SystemExit):
    """The settings cannot be used; the message says which key or variable and why."""


class PerUserLimits(BaseModel):
    """What one user may use, in every auth mode. 0 or null turns a limit off."""

    model_config = ConfigDict(extra="forbid")

    # Requests per minute to the API (flask-limiter): in this process's memory, or shared by
    # every process through `storage_url` (redis://...).
    requests_per_minute: int = Field(1200, ge=0, le=1_000_000)
    # Runs queued, running or waiting for input at once.
    live_runs: int = Field(0, ge=0, le=100_000)
    # USD per UTC day, summed from the user's stored LLM calls; checked before a run starts and
    # before every LLM call.
    daily_budget_usd: float | None = Field(None, ge=0)
    storage_url: str = "memory://"


class RunLimits(BaseModel):
    """Hard caps on one run, so that no workflow can loop forever or run up a bill unseen."""

    model_config = ConfigDict(extra="ignore")

    max_llm_calls: int = Field(40, ge=1, le=10_000)
    max_run_seconds: float = Field(600, gt=0, le=86_400)
    # Earlier messages of the session given to the agents as context for a follow-up.
    history_messages: int = Field(20, ge=0, le=1000)
    per_user: PerUserLimits = Field(default_factory=PerUserLimits)


class LLMSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    request_timeout_s: float = Field(120, gt=0)
    # The model an agent without a config_list gets when the server has OPENAI_* credentials;
    # without them, the embedded model is the default.
    default_model: str = "gpt-4o-mini"
    # Where a request's `base_url` (and a stored credential's) may point: URL prefixes. null is
    # the default: the server's own endpoint, and local addresses in auth.mode none. The server's
    # endpoint is always allowed (see llm/outbound.py).
    allowed_base_urls: list[str] | None = Field(default=None, max_length=100)

    @field_validator("allowed_base_urls")
    @classmethod
    def _prefixes(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [check_prefix(p) for p in value]


class ToolSettings(BaseModel):
    """What agents' tools may reach: MCP servers (`mcp_servers` in an agent config) only at URLs
    that start with one of `mcp_allowed_urls` (matched as `llm.allowed_base_urls`; default: none)."""

    model_config = ConfigDict(extra="ignore")

    mcp_allowed_urls: list[str] = Field(default_factory=list, max_length=100)
    # One MCP request (listing tools, one call) may take this long.
    mcp_timeout_s: float = Field(30, gt=0, le=3600)

    @field_validator("mcp_allowed_urls")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        return [check_prefix(p) for p in value]


class RunSettings(BaseModel):
    """Live runs: how many run at once, how long a human has to answer, SSE keep-alive, and
    where they run: in this process (no `broker_url`, the default), or on Celery workers fed by
    a broker, with events, cancels, human input through Redis (`redis_url`) and the runs' state
    in the database (the distributed mode, `services/backends/`)."""

    model_config = ConfigDict(extra="ignore")

    pool_size: int = Field(128, ge=1, le=4096)
    input_timeout_s: float = Field(300, gt=0)
    heartbeat_s: float = Field(15, gt=0)
    # redis://... or amqp://... (RabbitMQ): runs go to `python -m autobots worker` processes.
    # Also AUTOBOTS_BROKER_URL.
    broker_url: str | None = None
    # Events, cancels, human input (redis://...); default: the broker, when it is Redis. Also
    # AUTOBOTS_REDIS_URL.
    redis_url: str | None = None
    # The broker's queue of runs: deployments (or test runs) sharing one broker each use their own.
    queue: str = Field("autobots", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    # A worker's threads (Celery's thread pool: runs wait on I/O, not on the CPU).
    worker_concurrency: int = Field(16, ge=1, le=1024)
    # A worker writes its runs' heartbeats this often; a run whose heartbeat is older than
    # `dead_after_s` is marked interrupted by whichever live process sees it first.
    worker_heartbeat_s: float = Field(5, gt=0, le=60)
    dead_after_s: float = Field(20, gt=0, le=3600)
    # A run no worker has taken this long after it was queued (no worker running, or its queue
    # message lost with a broker that restarted) fails, saying so, rather than wait for ever.
    queued_timeout_s: float = Field(900, gt=0, le=7 * 86_400)
    # On SIGTERM a worker takes no new runs and lets its runs finish for this long, then
    # interrupts the ones still going (what was said is kept).
    shutdown_grace_s: float = Field(30, ge=0, le=86_400)
    # A run's Redis stream of events lives this long after the run ends (then the database
    # serves it).
    stream_ttl_s: int = Field(3600, ge=1, le=30 * 86_400)
    # Files the code of a run leaves are kept in the database for every API process, each up to
    # this size (bigger ones are listed but served only where they were written).
    max_stored_file_bytes: int = Field(10_485_760, ge=0)

    @property
    def distributed(self) -> bool:
        return bool(self.broker_url)

    @property
    def events_url(self) -> str | None:
        """Where events, cancels and input go in the distributed mode."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None


class ClientSettings(BaseModel):
    """Defaults for the client scripts in `src/web/testing/`."""

    model_config = ConfigDict(extra="ignore")

    # null: the scripts use this config's own `host` and `port`.
    server_url: str | None = None
    # The older name of `default_user_id` (read from here when that is not set).
    user_id: str | None = None


class CorsSettings(BaseModel):
    """Cross-origin requests are refused unless their origin is named here (scheme://host:port)."""

    model_config = ConfigDict(extra="forbid")

    allowed_origins: list[str] = Field(default_factory=list)


class ScheduleSettings(BaseModel):
    """Schedules (`/api/schedules`): every server process (and worker) checks for due ones every
    `tick_s`; a due time is claimed in the database, so one process fires it (services/schedules.py)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    tick_s: float = Field(1.0, gt=0, le=60)


class WebhookSettings(BaseModel):
    """Webhooks on a run's end (`webhook: {url}` on POST /api/runs or a schedule), signed with
    `secret` (unset: derived from the server's `secret_key`; `python -m autobots webhooks secret`
    prints it). Only hosts named in `allowed_hosts` (host names or IP literals) may be called;
    none by default, so webhooks are refused until an operator names some (services/webhooks.py)."""

    model_config = ConfigDict(extra="forbid")

    allowed_hosts: list[str] = Field(default_factory=list, max_length=100)
    secret: SecretStr | None = Field(default=None, exclude=True, min_length=16)
    # Attempts per delivery; the n-th retry waits backoff_s * 2**(n-1).
    tries: int = Field(3, ge=1, le=10)
    backoff_s: float = Field(10, ge=0, le=3600)
    timeout_s: float = Field(10, gt=0, le=120)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        hosts = []
        for entry in value:
            host = entry.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
            if not host or any(c in host for c in "/@? #") or (":" in host and host.count(":") < 2):
                raise ValueError(f"'{entry}' is not a host name or an IP address (no scheme, port or path)")
            hosts.append(host)
        return hosts


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class MetricsSettings(BaseModel):
    """`GET /metrics` (Prometheus text format). Every process of one machine writes its counters
    to files in `multiproc_dir` (prometheus_client's multiprocess mode) and any API process of
    that machine serves their sum. Reachable from loopback clients (`allow_loopback`), and from
    anywhere with `Authorization: Bearer <token>`: `token` (AUTOBOTS_METRICS__TOKEN), or only its
    SHA-256 hex digest (`token_sha256`) so the config file holds no secret."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Default: `metrics/` in the server's data dir (data_dir, else the SQLite database's dir,
    # else the working directory). One per machine: every process of the machine shares it.
    multiproc_dir: str | None = None
    token: SecretStr | None = Field(default=None, exclude=True, min_length=16)
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    # Behind a reverse proxy on the same machine every client looks like loopback: set false.
    allow_loopback: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="ignore", env_prefix=ENV_PREFIX, env_nested_delimiter="__", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    database_url: str = "sqlite:///database.sqlite"
    server_threads: int = Field(256, ge=1, le=4096)
    # Database connections one process may hold (PostgreSQL): pool_size + max_overflow. Every
    # process of a deployment together must stay under the server's max_connections.
    database_pool_size: int = Field(10, ge=1, le=1000)
    database_max_overflow: int = Field(40, ge=0, le=1000)
    max_request_bytes: int = Field(1_048_576, ge=1024)
    limits: RunLimits = Field(default_factory=RunLimits)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    runs: RunSettings = Field(default_factory=RunSettings)
    code_execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
    client: ClientSettings = Field(default_factory=ClientSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    tools: ToolSettings = Field(default_factory=ToolSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    # How log lines look: `text` for people, `json` (one object a line) for a log collector.
    # Also `--log-format` on `serve` and `worker` (AUTOBOTS_LOG_FORMAT).
    log_format: LogFormat = LogFormat.TEXT
    schedules: ScheduleSettings = Field(default_factory=ScheduleSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    # What the original project's client scripts read from this file.
    default_user_id: str = Field("guestuser@autobots.local", min_length=1, max_length=200)
    default_session_id: str | None = None
    default_gallery_id: str | None = None
    default_user_dir: str | None = None
    default_query: str = "What is 17*23?"
    # Server credentials come only from the environment and are never written anywhere.
    openai_api_key: SecretStr | None = Field(default=None, exclude=True)
    openai_base_url: str | None = None
    # Encrypts the provider keys users store (`/api/credentials`). Unset: one is generated at the
    # first start and kept in `<data_dir>/secret.key` (mode 0600). Processes that share a
    # database must share it: set it (AUTOBOTS_SECRET_KEY) wherever more than one runs.
    secret_key: SecretStr | None = Field(default=None, exclude=True, min_length=16)
    # Where the server keeps its own files (the generated secret); default: the SQLite
    # database's directory, else the working directory.
    data_dir: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _client_user_alias(cls, raw: Any) -> Any:
        """`client.user_id` is the older name of `default_user_id`: one default user for the page
        and the client scripts."""
        if isinstance(raw, dict) and "default_user_id" not in raw:
            client = raw.get("client")
            if isinstance(client, dict) and client.get("user_id"):
                raw = {**raw, "default_user_id": client["user_id"]}
        return raw

    @model_validator(mode="after")
    def _distributed_needs(self) -> Settings:
        """The distributed mode's processes share their runs through the database and Redis:
        PostgreSQL (SQLite's one-writer file cannot take several processes' run traffic, and
        never several machines) and a Redis for events, cancels and input."""
        if not self.runs.distributed:
            return self
        if not self.database_url.startswith("postgresql"):
            raise ValueError(
                "runs.broker_url (the distributed mode) needs a PostgreSQL database_url "
                "(postgresql+psycopg://...): SQLite is for one process only"
            )
        if self.runs.events_url is None:
            raise ValueError(
                "runs.broker_url is not Redis: set runs.redis_url (AUTOBOTS_REDIS_URL) for events, "
                "cancels and human input"
            )
        if self.secret_key is None:
            raise ValueError(
                "runs.broker_url (the distributed mode) needs secret_key (AUTOBOTS_SECRET_KEY), the "
                "same in every process: queued runs and stored credentials are sealed with it"
            )
        if self.limits.per_user.storage_url == "memory://":
            # Request rates counted per process would allow N times the limit with N processes.
            self.limits.per_user.storage_url = self.runs.events_url
        return self


# Short names for the distributed mode's two URLs (the long ones work too).
ENV_ALIASES = {"AUTOBOTS_BROKER_URL": ("runs", "broker_url"), "AUTOBOTS_REDIS_URL": ("runs", "redis_url")}


def default_config_path() -> Path:
    return Path(str(resources.files("autobots.web").joinpath("config.json")))


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' own environment source, reading a given mapping (the process's
    environment in the server; a dict in tests) rather than `os.environ` behind our back."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def _env_names(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, bool]]:
    """Every variable name the settings accept: (name, whether deeper names may follow it)."""
    for name, info in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        nested = _model_of(info.annotation)
        if nested is not None:
            yield env, False
            yield from _env_names(nested, env + "__")
        else:
            yield env, typing.get_origin(info.annotation) is dict or info.annotation is dict


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def unknown_env(env: Mapping[str, str]) -> list[str]:
    """`AUTOBOTS_*` variables that name no setting (and are not reserved)."""
    exact: set[str] = set()
    open_ended: list[str] = []
    for name, deeper in _env_names(Settings, ENV_PREFIX):
        exact.add(name)
        if deeper:
            open_ended.append(name + "__")
    return sorted(
        k
        for k in env
        if k.upper().startswith(ENV_PREFIX)
        and k.upper() not in exact
        and k.upper() not in RESERVED_ENV
        and k.upper() not in ENV_ALIASES
        and not k.upper().startswith(RESERVED_ENV_PREFIXES)
        and not k.upper().startswith(tuple(open_ended))
    )


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` wins, key by key inside objects; a list or a value replaces what was there."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"])
        env = ENV_PREFIX + "__".join(str(p).upper() for p in err["loc"]) if path else ""
        lines.append(f"  {path or '(top level)'} (env {env}): {err['msg']}")
    return "\n".join(lines)


def data_dir(settings: Settings) -> Path:
    """Where the server keeps its own files: `data_dir`, else the SQLite database's directory,
    else the working directory."""
    if settings.data_dir:
        return Path(settings.data_dir)
    url = settings.database_url
    if url.startswith("sqlite:///") and url.removeprefix("sqlite:///") not in ("", ":memory:"):
        return Path(url.removeprefix("sqlite:///").split("?", 1)[0]).resolve().parent
    return Path.cwd()


def metrics_dir(settings: Settings) -> Path:
    """This machine's prometheus_client multiprocess directory (`metrics.multiproc_dir`)."""
    configured = settings.metrics.multiproc_dir
    return Path(configured).expanduser() if configured else data_dir(settings) / "metrics"


def load_settings(config_path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from a JSON file and `AUTOBOTS_*` / `OPENAI_*` environment variables."""
    env = dict(os.environ if env is None else env)
    path = Path(config_path or env.get("AUTOBOTS_CONFIG") or default_config_path())
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"config file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise SettingsError(f"config file {path} must hold a JSON object")
    unknown = unknown_env(env)
    if unknown:
        raise SettingsError(
            f"unknown environment variable(s) {', '.join(unknown)}: no such setting. Settings are "
            "AUTOBOTS_ + the config key path in capitals, levels joined by __ (e.g. AUTOBOTS_AUTH__MODE)"
        )
    try:
        from_env = _EnvSource(Settings, {k: v for k, v in env.items() if k.upper().startswith(ENV_PREFIX)})()
    except Exception as exc:  # pydantic-settings' SettingsError: a value that is not valid JSON
        raise SettingsError(f"bad environment setting: {exc}") from exc
    for alias, (section, field_name) in ENV_ALIASES.items():
        if value := env.get(alias):
            from_env.setdefault(section, {}).setdefault(field_name, value)
    merged = _merge(raw, from_env)
    if key := env.get("OPENAI_API_KEY"):
        merged.setdefault("openai_api_key", key)
    if base := env.get("OPENAI_BASE_URL"):
        merged.setdefault("openai_base_url", base)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(f"invalid settings ({path} and the environment):\n{_describe(exc)}") from exc
