"""The model client AutoGen calls this server's LLM endpoints through, registered with AutoGen's
public extension point (`model_client_cls` in a config entry, then `register_model_client`).

Why, measured with `bench/overhead.py --profile` (scripted LLM at 0 ms latency):
- AutoGen builds an `openai.OpenAI` for every agent of every run (`OpenAIWrapper.__init__`), and
  agents are built fresh for every request. An `OpenAI` holds no conversation state, only its
  endpoint, key, headers, timeout and HTTP client: one per distinct set of those is shared here
  by every agent of the process (a small LRU), so a run builds none.
- The SDK's `chat.completions.create` walks every message of every request against its
  TypedDict annotations (`maybe_transform`) to build a body that, for AutoGen's plain-JSON
  messages, is the same dict (chat completion params have no aliases or formats). A plain
  call is posted as it is through the SDK's documented `post`, with the same auth, timeout,
  retries and parsing into a `ChatCompletion`, and the same errors (`openai.APIError`).
Streaming, structured output and the models AutoGen rewrites requests for are left to AutoGen's
own `OpenAIClient.create`, unchanged. Nothing is cached: every call reaches the endpoint.

AutoGen also asks `inspect.getfullargspec(OpenAI.__init__)` for every key of every config an
agent is built with (`OpenAIWrapper.openai_kwargs`); `cache_sdk_signatures` gives those two
functions the signature inspect would compute, once (`__signature__`, inspect's own hook).

Building an agent with an llm_config still costs AutoGen a validated `LLMConfig` and an
`OpenAIWrapper` (about 0.6 ms an agent, 36 `getfullargspec` calls of it): `shared_wrapper` keeps
one pair per distinct resolved llm_config per thread, for agents that never change theirs (no
tools offered: offering one rewrites the agent's config and wrapper). A wrapper holds no
conversation state, but it is not safe to share across threads: each call adds to its usage
summaries, which AutoGen iterates at the end of every chat (`gather_usage_summary`), and to its
response metadata. Per thread, its calls come one at a time, as in any single AutoGen program: a
run's agents are built and used in the run's thread (parallel receivers build theirs in their
own). A config tagged with its run (the embedded model's calls, stoppable per run) is never kept.
"""

from __future__ import annotations

import copy
import inspect
import logging
import threading
from collections import OrderedDict
from typing import Any, cast

import openai
from autogen import LLMConfig
from autogen.oai.client import OpenAIClient, OpenAIWrapper
from openai.types.chat import ChatCompletion

# Which keys of a config entry are `openai.OpenAI(...)` arguments.
_OPENAI_KWARGS = frozenset(inspect.signature(openai.OpenAI.__init__).parameters) - {"self"}
# Request options of the SDK's own create that a plain post would not apply.
_SDK_ONLY = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})
_MAX_CLIENTS = 256
_MAX_WRAPPERS = 16  # per thread: a run pool's threads times this many configs at most
# Keys of an entry that are this client's, not the request's.
_ENDPOINT = "autobots_endpoint"
_OURS = frozenset({"model_client_cls", _ENDPOINT})

_lock = threading.Lock()
_clients: OrderedDict[tuple[Any, ...], openai.OpenAI] = OrderedDict()
_local = threading.local()  # .wrappers: this thread's OrderedDict of config key -> pair


class _QuietPlaceholders(logging.Filter):
    """AutoGen logs (at INFO, to stdout) that every agent's entry names a custom client until it
    is registered, which this server does as it builds the agent: a line per agent per run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Detected custom model client in config")


logging.getLogger("autogen.oai.client").addFilter(_QuietPlaceholders())


def cache_sdk_signatures() -> None:
    """Let `inspect` return OpenAI's constructors' signatures without recomputing them."""
    for cls in (openai.OpenAI, openai.AzureOpenAI):
        init: Any = cls.__init__
        if getattr(init, "__signature__", None) is None:
            init.__signature__ = inspect.signature(init, follow_wrapped=False)


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Endpoint):  # a new one per resolution: equal by what it holds
        return ("endpoint", _frozen(value.kwargs))
    return ("id", id(value))  # an HTTP client: shared by identity


def shared_openai(config: dict[str, Any]) -> openai.OpenAI:
    """The process's `openai.OpenAI` for a config entry's endpoint, key, headers and timeout."""
    kwargs = {k: v for k, v in config.items() if k in _OPENAI_KWARGS}
    key = tuple(sorted((k, _frozen(v)) for k, v in kwargs.items()))
    with _lock:
        client = _clients.get(key)
        if client is not None:
            _clients.move_to_end(key)
            return client
    client = openai.OpenAI(**kwargs)
    with _lock:
        client = _clients.setdefault(key, client)
        _clients.move_to_end(key)
        while len(_clients) > _MAX_CLIENTS:
            _clients.popitem(last=False)  # not closed: the HTTP client is shared
    return client


class Endpoint:
    """An entry's `OpenAI(...)` arguments in one value AutoGen carries without reading: every key
    of an entry costs AutoGen two `getfullargspec` calls per agent built (about 0.1 ms each), and
    the key stays out of the llm_config AutoGen keeps, logs and copies."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs

    def __deepcopy__(self, memo: dict[int, Any]) -> Endpoint:
        return self  # AutoGen deep-copies llm_config; the shared HTTP client must stay shared

    def __repr__(self) -> str:
        return f"Endpoint({self.kwargs.get('base_url') or 'default'})"  # never the key


def client_entry(entry: dict[str, Any], opaque: bool = True) -> dict[str, Any]:
    """A config entry for AutoGen that names this client. `opaque`: the endpoint's arguments in
    one `Endpoint` value (not with AutoGen's disk cache, whose key is the entry as JSON)."""
    named = {**entry, "model_client_cls": ServerModelClient.__name__}
    if not opaque:
        return named
    kwargs = {k: v for k, v in named.items() if k in _OPENAI_KWARGS}
    return {**{k: v for k, v in named.items() if k not in _OPENAI_KWARGS}, _ENDPOINT: Endpoint(kwargs)}


class ServerModelClient(OpenAIClient):
    """AutoGen's OpenAI client over a shared `openai.OpenAI`, posting plain calls as they are."""

    def __init__(self, config: dict[str, Any], **_kwargs: Any) -> None:
        endpoint = config.get(_ENDPOINT)
        kwargs = endpoint.kwargs if isinstance(endpoint, Endpoint) else config
        super().__init__(shared_openai(kwargs), response_format=config.get("response_format"))

    def create(self, params: dict[str, Any]) -> ChatCompletion:
        params = {k: v for k, v in params.items() if k not in _OURS}
        if not self._plain(params):
            return super().create(params)
        for message in params["messages"]:
            message.setdefault("role", "user")  # as AutoGen does (A2A messages may have none)
        body = {**params, "stream": False}
        return self._oai_client.post(
            "/chat/completions",
            cast_to=ChatCompletion,
            body=body,
            options={"security": {"bearer_auth": True}},
        )

    def _plain(self, params: dict[str, Any]) -> bool:
        """A call AutoGen's create would send as it is: no stream, structured output, a model
        it rewrites requests for, or SDK-only options."""
        model = str(params.get("model", ""))
        return (
            "messages" in params
            and not params.get("stream", False)
            and self.response_format is None
            and "response_format" not in params
            and not model.startswith("o1")
            and "mistral" not in model
            and model != "deepseek-reasoner"
            and not _SDK_ONLY.intersection(params)
        )


def shared_wrapper(llm_config: dict[str, Any]) -> tuple[LLMConfig, OpenAIWrapper]:
    """This thread's validated `LLMConfig` and `OpenAIWrapper` (this client registered in it) for
    a resolved llm_config, built as AutoGen's agent constructor builds them. Neither may be
    changed by whoever uses them: they serve every agent this thread builds from that config."""
    wrappers: OrderedDict[Any, tuple[LLMConfig, OpenAIWrapper]] | None = getattr(_local, "wrappers", None)
    if wrappers is None:
        wrappers = _local.wrappers = OrderedDict()
    key = _frozen(llm_config)
    found = wrappers.get(key)
    if found is not None:
        wrappers.move_to_end(key)
        return found
    config = LLMConfig.ensure_config(copy.deepcopy(llm_config))  # it takes `config_list` out
    wrapper = OpenAIWrapper(**config)
    for entry in config.config_list:
        if getattr(entry, "model_client_cls", None) == ServerModelClient.__name__:
            wrapper.register_model_client(cast(Any, ServerModelClient))  # the class: one placeholder
    wrappers[key] = (config, wrapper)
    while len(wrappers) > _MAX_WRAPPERS:
        wrappers.popitem(last=False)
    return config, wrapper
