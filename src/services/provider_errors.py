"""How an LLM endpoint's failure, or anything a provider wrote, reaches a user or a log: keys
masked, markup and control characters gone, short. Never the body itself: an endpoint's answer
may hold anything, a key or another service's data."""

from __future__ import annotations

import contextlib
import re
import unicodedata
from http import HTTPStatus

import openai

_KEY_PATTERN = re.compile(r"(sk-|key-)[A-Za-z0-9_\-*]{6,}")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}")
_KEY_PARAM = re.compile(r"(?i)\b(api[_-]?key|key|token|secret|password)=[^&\s\"']+")
_MARKUP = re.compile(r"<[^>]{0,2000}>")
REASON_MAX_CHARS = 200


def redact(text: str, secrets: list[str]) -> str:
    """Remove API keys from text that may reach a user or a log (provider errors quote keys)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1 ***", text)
    text = _KEY_PARAM.sub(r"\1=***", text)
    return _KEY_PATTERN.sub(r"\1***", text)


def clean_reason(text: str, secrets: list[str], limit: int = REASON_MAX_CHARS) -> str:
    """A provider's text made fit to show: keys masked, markup and control characters gone,
    whitespace collapsed, at most `limit` characters."""
    text = redact(text, secrets)
    text = _MARKUP.sub(" ", text)
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def describe_failure(exc: BaseException, secrets: list[str]) -> str:
    """What the user is told of an endpoint's failure: the HTTP status and a short reason (the
    provider's JSON `error.message` when it gave one, cleaned; else the status's name). Never the
    body itself: an endpoint's answer may hold anything, a key or another service's data."""
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {clean_reason(provider_reason(exc), secrets)}"
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return (
            "no answer in time: the endpoint did not answer within the call's timeout "
            "(llm_config.timeout) or the run's time left (limits.max_run_seconds)"
        )
    if isinstance(exc, openai.APIConnectionError):
        where = ""
        with contextlib.suppress(RuntimeError, AttributeError):
            where = f" to {exc.request.url.host}" + (
                f":{exc.request.url.port}" if exc.request.url.port else ""
            )
        return f"could not connect{where} ({clean_reason(str(exc.__cause__ or exc), secrets, 120)})"
    return clean_reason(str(exc) or type(exc).__name__, secrets)


def provider_reason(exc: openai.APIStatusError) -> str:
    body = exc.body  # the JSON body's `error` object when there is one, else the whole body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(message, str) and message.strip():
            return message
    try:
        return HTTPStatus(exc.status_code).phrase
    except ValueError:
        return "the endpoint gave no reason"
