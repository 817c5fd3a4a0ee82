"""Turning a request's `llm_config` into AutoGen's, with the server's credentials where asked.

Rules, so that the server's key can never be sent somewhere a request chose:
- `api_key: null` uses the server's key, but only towards the server's endpoint (`OPENAI_BASE_URL`,
  or OpenAI's when none is set). A request that names another `base_url` brings its own key, or
  none at all (local OpenAI-compatible servers need none).
- An entry with neither a usable key nor an endpoint is not usable; a config with no usable entry
  is answered by the embedded local model, and the answer's metadata says so.
- The embedded model is reached on 127.0.0.1 with no proxy from the environment.
- No entry is retried by the SDK (`max_retries: 0`): a retry would spend the call's timeout again
  (a hung endpoint cost three timeouts), and on the embedded model it would queue a second
  generation behind the first. What each try may take is the call's budget (`budget.py`).
- Whether a request's `base_url` may be called at all is `outbound.py`'s rule, checked when the
  request is validated; the shared clients never follow a redirect, so an allowed endpoint cannot
  send the call (and its key) on to another host.
- A config entry that names a stored `credential` arrives here already resolved by the chat
  service (its key in `api_key`, its endpoint in `base_url`).
- Every entry names the server's model client (`model_client.py`); its endpoint, key, headers
  and timeout travel in one opaque value, so AutoGen builds no OpenAI client per agent.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from ..schemas.workflow import LLMConfig, ModelEndpoint
from ..settings import Settings
from . import budget, embedded
from .model_client import cache_sdk_signatures, client_entry
from .pricing import Price, config_price
from .transport import PerThreadTransport

cache_sdk_signatures()  # once per process: AutoGen asks for OpenAI's signature per config key

# The OpenAI SDK insists on a key; local OpenAI-compatible servers ignore it.
NO_KEY = "no-key-needed"


class _SharedHTTPClient(httpx.Client):
    """AutoGen deep-copies every llm_config; a shared connection pool must stay shared."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedHTTPClient:
        return self


_client_lock = threading.Lock()
_clients: dict[bool, httpx.Client] = {}


def shared_http_client(local: bool = False) -> httpx.Client:
    """One HTTP client for every agent of every run in this process (one more for the local model).

    Building an OpenAI client loads the system's CA certificates (about 70 ms); agents are built
    fresh for every request, so without sharing that cost would dominate short runs. Sharing also
    keeps connections to the LLM endpoint alive, in a pool per thread (`transport.py`). The
    client keeps no cookies: one user's endpoint must not be able to set state that another
    user's requests carry. It never follows a redirect: the allowed endpoint is the one called.
    Its event hooks hold every request to its call's time budget (`budget.py`). The local
    model's client ignores proxy settings: httpx would send even 127.0.0.1 through `HTTP_PROXY`.
    """
    with _client_lock:
        client = _clients.get(local)
        if client is None:
            tls = httpx.create_ssl_context(trust_env=not local)
            client = _clients[local] = _SharedHTTPClient(
                verify=tls,
                transport=PerThreadTransport(tls, trust_env=not local),
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
                follow_redirects=False,
                trust_env=not local,
                event_hooks=budget.event_hooks(),
            )
        return client


class NoUsableEndpoint(ValueError):
    """The config names no model the server can reach."""


@dataclass
class ResolvedLLMConfig:
    """AutoGen's `llm_config`, plus what the usage recorder needs to price the calls."""

    llm_config: dict[str, Any]
    prices: dict[str, Price] = field(default_factory=dict)
    requested_models: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Each stops this config's calls in flight to an embedded model (a run's cancel calls them).
    stoppers: list[Callable[[], None]] = field(default_factory=list)


def server_has_endpoint(settings: Settings) -> bool:
    return bool(settings.openai_api_key or settings.openai_base_url)


def resolve(
    config: LLMConfig, settings: Settings, start_embedded: bool = True, run_tag: str | None = None
) -> ResolvedLLMConfig:
    """`start_embedded=False` only checks names: validating a config must not load a model.
    `run_tag` tags the calls to embedded models so that the run can stop them (`stoppers`)."""
    entries: list[dict[str, Any]] = []
    stoppers: list[Callable[[], None]] = []
    prices: dict[str, Price] = {}
    notes: list[str] = []
    default = settings.llm.default_model if server_has_endpoint(settings) else settings.embedded.default_model
    entries_in = config.config_list or [ModelEndpoint(model=default)]
    for entry in entries_in:
        resolved: dict[str, Any] | None
        if embedded.is_embedded(entry.model):
            resolved = _embedded_entry(entry.model, settings, start_embedded, run_tag, stoppers)
        else:
            resolved = _resolve_entry(entry, settings)
            if entry.price is not None:
                prices[entry.model] = config_price(entry.price)
        if resolved is None:
            continue
        entries.append(resolved)
    if not entries:
        # Nothing the request named can be reached: answer with the embedded model rather
        # than fail, and say so in the answer's metadata.
        fallback = settings.embedded.default_model
        entries.append(_embedded_entry(fallback, settings, start_embedded, run_tag, stoppers))
        notes.append(
            f"no usable key or endpoint for {', '.join(e.model for e in entries_in)}: "
            f"answered by the embedded model {fallback}"
        )
    for resolved in entries:
        if embedded.is_embedded(resolved["model"]):
            prices[resolved["model"]] = config_price((0, 0), source="embedded")
        if config.max_tokens is not None:
            resolved["max_tokens"] = config.max_tokens
        if config.stream or (config.stream is None and embedded.is_embedded(resolved["model"])):
            resolved["stream"] = True
    timeout = config.timeout or settings.llm.request_timeout_s
    if config.timeout is None and any(embedded.is_embedded(e["model"]) for e in entries):
        # The embedded model answers one request at a time on the CPU: a call may wait in its
        # queue behind other agents' replies, which is slow but not a failure.
        timeout = max(timeout, settings.embedded.request_timeout_s)
    # No single call may outlast the run's own time cap.
    timeout = min(timeout, settings.limits.max_run_seconds)
    # AutoGen calls each entry through this server's model client (`model_client.py`), which
    # builds its OpenAI client from the entry alone: the timeout goes in it too.
    for i, resolved in enumerate(entries):
        resolved["timeout"] = math.ceil(timeout)
        entries[i] = client_entry(resolved, opaque=config.cache_seed is None)
    llm_config: dict[str, Any] = {
        "config_list": entries,
        "temperature": config.temperature,
        # No cache unless asked for: a cached answer is a call the endpoint never counted.
        "cache_seed": config.cache_seed,
        "timeout": math.ceil(timeout),
    }
    return ResolvedLLMConfig(llm_config, prices, [e.model for e in entries_in], notes, stoppers)


def _embedded_entry(
    model: str,
    settings: Settings,
    start: bool,
    run_tag: str | None = None,
    stoppers: list[Callable[[], None]] | None = None,
) -> dict[str, Any]:
    if model not in embedded.known_models():
        raise NoUsableEndpoint(
            f"unknown embedded model '{model}'; known: {', '.join(embedded.known_models())}"
        )
    if not start:
        return {"model": model, "api_key": NO_KEY, "base_url": "http://127.0.0.1:9/v1", "price": [0, 0]}
    endpoint = embedded.embedded_endpoint(model, settings.embedded)
    entry = endpoint.config_entry(run_tag)
    if run_tag and stoppers is not None:
        stoppers.append(lambda: _stop_quietly(endpoint, run_tag))
    entry["http_client"] = shared_http_client(local=True)
    entry["max_retries"] = 0
    return entry


def _resolve_entry(entry: ModelEndpoint, settings: Settings) -> dict[str, Any] | None:
    if entry.credential is not None and entry.api_key is None:
        raise NoUsableEndpoint(f"the stored credential '{entry.credential}' is not available here")
    server_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    server_url = settings.openai_base_url
    base_url = entry.base_url or server_url
    towards_server = entry.base_url is None or entry.base_url == server_url
    key = entry.api_key or (server_key if towards_server else None)
    if key is None and base_url is None:
        return None
    resolved: dict[str, Any] = {
        "model": entry.model,
        "api_key": key or NO_KEY,
        "http_client": shared_http_client(),
        "max_retries": 0,
    }
    if base_url:
        resolved["base_url"] = base_url
    if entry.price is not None:
        resolved["price"] = list(entry.price)
    return resolved


def _stop_quietly(endpoint: embedded.EmbeddedEndpoint, tag: str) -> None:
    """Best effort: a model server that is gone has nothing left to stop."""
    with contextlib.suppress(OSError, ValueError):
        endpoint.cancel(tag)
