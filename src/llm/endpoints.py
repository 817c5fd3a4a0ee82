"""Turning a request's `llm_config` into AutoGen's, with the server's credentials where asked.

Rules, so that the server's key can never be sent somewhere a request chose:
- `api_key: null` uses the server's key, but only towards the server's endpoint (`OPENAI_BASE_URL`,
  or OpenAI's when none is set). A request that names another `base_url` brings its own key, or
  none at all (local OpenAI-compatible servers need none).
- An entry with neither a usable key nor an endpoint is not usable; a config with no usable entry
  is an error the caller reports as a 400.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
from autobots.llm.pricing import Price, config_price
from autobots.schemas.workflow import LLMConfig, ModelEndpoint
from autobots.settings import Settings

# The OpenAI SDK insists on a key; local OpenAI-compatible servers ignore it.
NO_KEY = "no-key-needed"


class _SharedHTTPClient(httpx.Client):
    """AutoGen deep-copies every llm_config; a shared connection pool must stay shared."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedHTTPClient:
        return self


_client_lock = threading.Lock()
_client: httpx.Client | None = None


def shared_http_client() -> httpx.Client:
    """One HTTP client for every agent of every run in this process.

    Building an OpenAI client loads the system's CA certificates (about 70 ms); agents are built
    fresh for every request, so without sharing that cost would dominate short runs. Sharing also
    pools connections to the LLM endpoint. The client keeps no cookies: one user's endpoint must
    not be able to set state that another user's requests carry.
    """
    global _client
    with _client_lock:
        if _client is None:
            _client = _SharedHTTPClient(
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
                follow_redirects=False,
            )
        return _client


class NoUsableEndpoint(ValueError):
    """The config names no model the server can reach."""


@dataclass
class ResolvedLLMConfig:
    """AutoGen's `llm_config`, plus what the usage recorder needs to price the calls."""

    llm_config: dict[str, Any]
    prices: dict[str, Price] = field(default_factory=dict)
    requested_models: list[str] = field(default_factory=list)


def resolve(config: LLMConfig, settings: Settings) -> ResolvedLLMConfig:
    entries: list[dict[str, Any]] = []
    prices: dict[str, Price] = {}
    entries_in = config.config_list or [ModelEndpoint(model="gpt-4o-mini")]
    for entry in entries_in:
        resolved = _resolve_entry(entry, settings)
        if resolved is None:
            continue
        if config.max_tokens is not None:
            resolved["max_tokens"] = config.max_tokens
        if entry.price is not None:
            prices[entry.model] = config_price(entry.price)
        entries.append(resolved)
    if not entries:
        raise NoUsableEndpoint(
            "no usable LLM endpoint: give config_list entries an api_key or a base_url, "
            "or start the server with OPENAI_API_KEY / OPENAI_BASE_URL"
        )
    timeout = config.timeout or settings.llm.request_timeout_s
    llm_config: dict[str, Any] = {
        "config_list": entries,
        "temperature": config.temperature,
        # No cache unless asked for: a cached answer is a call the endpoint never counted.
        "cache_seed": config.cache_seed,
        "timeout": math.ceil(timeout),
    }
    return ResolvedLLMConfig(llm_config, prices, [e.model for e in entries_in])


def _resolve_entry(entry: ModelEndpoint, settings: Settings) -> dict[str, Any] | None:
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
    }
    if base_url:
        resolved["base_url"] = base_url
    if entry.price is not None:
        resolved["price"] = list(entry.price)
    return resolved
