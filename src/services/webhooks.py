"""Webhooks: a run's end POSTed, signed, to a URL its request (or its schedule) named.

Contract:
- `check` (at submit, a 400 naming the field): an http(s) URL without credentials whose host is
  one of `webhooks.allowed_hosts` (host names or IP literals; none by default, so webhooks are
  refused until an operator names some).
- A delivery is stored with its run (`storage/webhooks.py`) and sent once the run has a terminal
  status, whatever ended it (its worker, a cancel, the time cap, the reaper, a queued run's
  expiry): `dispatch`, on every server process's ticker, leases deliverable rows in the
  database, so one process makes each attempt whichever process ended the run.
- At delivery the host is checked again and resolved; every address it resolves to must be
  public, unless the URL names the host by an IP literal that is itself allowed (tests use
  127.0.0.1). The request goes to the address that was checked (pinned: the IP in the URL, the
  name in `Host` and in TLS SNI, so certificates are checked for the name); redirects are never
  followed (a 3xx is a failed attempt); no proxy from the environment is used.
- The body is the run's summary as JSON (`run_id`, `status`, `answer`, `error`, `usage`,
  `timing`, `session_id`, `workflow`, ...). Headers: `X-Autobots-Signature: sha256=<hex
  HMAC-SHA256 of the raw body>`, keyed by `webhook_secret` (`webhooks.secret`, else derived from
  the server's secret, so every process of a deployment agrees; `python -m autobots webhooks
  secret` prints it; never logged or returned by the API), `X-Autobots-Delivery` (the same on
  every attempt: receivers dedupe by it) and `X-Autobots-Timestamp` (Unix seconds of the attempt).
- `webhooks.tries` attempts; a failed one is retried after `backoff_s * 2**(n-1)` (the lease
  checks the backoff too, so a sender holding an older list cannot retry early). Each attempt's
  time, HTTP status or error, and duration are stored and shown on the run (`for_run`).
- At least once, not exactly once: an attempt that timed out after the receiver took the body,
  or whose process died mid-attempt, is made again, with the same `X-Autobots-Delivery`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..auth.secretbox import load_secret
from ..settings import Settings, WebhookSettings
from ..storage.webhooks import DELIVERED, FAILED, PENDING, Delivery, WebhookRepository
from .credentials import secret_path
from .errors import BadRequest

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Autobots-Signature"
DELIVERY_HEADER = "X-Autobots-Delivery"
TIMESTAMP_HEADER = "X-Autobots-Timestamp"
_INFO = b"autobots webhooks v1"
REFUSED = "refused: "
# Deliveries one process sends at once (each waits on a receiver, up to timeout_s).
SENDERS = 4
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def webhook_secret(settings: Settings) -> str:
    """`webhooks.secret`, else a key derived (HKDF-SHA256) from the server's secret: the same in
    every process that shares the secret, and telling nothing of it."""
    if settings.webhooks.secret is not None:
        return settings.webhooks.secret.get_secret_value()
    configured = settings.secret_key.get_secret_value() if settings.secret_key else None
    server_secret = load_secret(configured, secret_path(settings))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(server_secret).hex()


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class Refused(Exception):
    """The URL may not be called now (its host is not allowed, or resolves where it may not)."""


@dataclass(frozen=True)
class Target:
    """Where an attempt connects: the checked address, and the name it is sent for."""

    url: str  # the URL with the pinned IP as its host
    host_header: str
    sni: str | None  # https: the name TLS asks for and checks the certificate against


def _literal(host: str) -> Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _host_key(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    address = _literal(host)
    return str(address) if address is not None else host


class HostPolicy:
    """Which webhook URLs may be called: `webhooks.allowed_hosts`."""

    def __init__(self, allowed: list[str]) -> None:
        self._allowed = frozenset(_host_key(h) for h in allowed)

    def check(self, url: str, field: str = "webhook.url") -> str:
        """The URL as it will be called, or a BadRequest naming `field`."""
        if any(ch.isspace() or not ch.isprintable() for ch in url):
            raise BadRequest(f"invalid request: {field}: must not contain spaces or control characters")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- a port that is not a number raises here
        except ValueError as exc:
            raise BadRequest(f"invalid request: {field}: not a URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"invalid request: {field}: must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise BadRequest(f"invalid request: {field}: must not carry a user name or password")
        if not self._allowed:
            raise BadRequest(
                f"invalid request: {field}: webhooks are not enabled on this server "
                "(its webhooks.allowed_hosts names no host)"
            )
        if _host_key(parts.hostname) not in self._allowed:
            raise BadRequest(
                f"invalid request: {field}: host {parts.hostname} is not in this server's "
                "webhooks.allowed_hosts"
            )
        return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))

    def pin(self, url: str) -> Target:
        """Resolve the URL's host now and check every address: where the attempt connects."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if _host_key(host) not in self._allowed:
            raise Refused(f"host {host} is no longer in webhooks.allowed_hosts")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        literal = _literal(host)
        if literal is not None:
            addresses = [literal]  # named by an allowed IP literal: the operator allowed that address
        else:
            addresses = _resolve(host, port)
            for address in addresses:
                if not _public(address):
                    raise Refused(
                        f"{host} resolves to {address}, a private or local address: only a host "
                        "named by its IP in webhooks.allowed_hosts may be one"
                    )
        pinned = addresses[0]
        netloc = f"[{pinned}]" if pinned.version == 6 else str(pinned)
        if parts.port is not None:
            netloc += f":{parts.port}"
        host_header = parts.netloc.rsplit("@", 1)[-1]
        return Target(
            urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
            host_header,
            host if parts.scheme == "https" and literal is None else None,
        )


def _resolve(host: str, port: int) -> list[Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"cannot resolve {host}: {exc}") from None
    found: list[Address] = []
    for info in infos:
        address = _literal(str(info[4][0]))
        if address is not None and address not in found:
            found.append(address)
    if not found:
        raise Refused(f"{host} resolves to no address")
    return found


def _public(address: Address) -> bool:
    return address.is_global and not address.is_multicast


def summary(run: dict[str, Any], delivery_id: str) -> dict[str, Any]:
    """What a webhook tells of a run that ended."""
    flow = run.get("flow") or {}
    started, ended = run["started_at"], run["ended_at"]
    return {
        "delivery_id": delivery_id,
        "run_id": run["run_id"],
        "status": run["status"],
        "answer": run["answer"],
        "error": run["error"],
        "usage": run["usage"],
        "timing": {
            "started_at": started.isoformat() if started else None,
            "ended_at": ended.isoformat() if ended else None,
            "duration_s": round((ended - started).total_seconds(), 3) if started and ended else None,
        },
        "session_id": run["session_id"],
        "user_id": run["user_id"],
        "workflow": {
            "id": run["workflow_id"],
            "version": run["workflow_version"],
            "name": flow.get("name"),
            "type": flow.get("type"),
        },
    }


class WebhookService:
    def __init__(
        self,
        settings: WebhookSettings,
        store: WebhookRepository,
        secret: str,
        on_attempt: Callable[[str], None] | None = None,
    ) -> None:
        """`on_attempt` is told each attempt's outcome: `delivered`, `retried` (it failed and is
        tried again), `failed` (the last try failed) or `refused` (the host check at delivery)."""
        self.settings = settings
        self._on_attempt = on_attempt
        self.policy = HostPolicy(settings.allowed_hosts)
        self._store = store
        self._secret = secret
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._pool: ThreadPoolExecutor | None = None
        self._busy = 0
        self._lock = threading.Lock()

    def check(self, url: str, field: str = "webhook.url") -> str:
        return self.policy.check(url, field)

    def for_run(self, run_id: str) -> dict[str, Any] | None:
        """The run's webhook and its attempts so far (None: the run asked for none)."""
        found = self._store.for_run(run_id)
        if not found:
            return None
        d = found[-1]
        return {"delivery_id": d.delivery_id, "url": d.url, "state": d.state, "attempts": d.attempts}

    # delivering --------------------------------------------------------------------------------

    def dispatch(self) -> int:
        """One tick: when anything is deliverable, start senders (up to SENDERS at once in this
        process); each leases and sends one delivery after another until none is left, so a
        burst is not held to a few a tick. Returns how many senders it started."""
        if not self._store.deliverable(datetime.now(UTC), 1):
            return 0
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="webhook")
            started = SENDERS - self._busy
            self._busy = SENDERS
            pool = self._pool
        for _ in range(started):
            pool.submit(self._drain)
        return started

    def _drain(self) -> None:
        try:
            while (delivery := self._lease_next()) is not None:
                try:
                    self._send(delivery)
                except Exception:  # its lease expires, and another attempt is made
                    log.exception(
                        "webhook delivery %s: the attempt failed unexpectedly", delivery.delivery_id
                    )
        finally:
            with self._lock:
                self._busy -= 1

    def _lease_next(self) -> Delivery | None:
        """A deliverable delivery leased for this process, or None when there is none left."""
        now = datetime.now(UTC)
        # Long enough for a name lookup and the receiver's timeout on connect, send and answer.
        until = now + timedelta(seconds=self.settings.timeout_s * 4 + 10)
        for delivery_id in self._store.deliverable(now, SENDERS * 2):
            delivery = self._store.lease(delivery_id, self._holder, now, until)
            if delivery is not None:
                return delivery  # else another sender (or process) has it: the next one
        return None

    def _send(self, delivery: Delivery) -> None:
        run = self._store.run_summary(delivery.run_id)
        if run is None:
            return  # the run was deleted with its session: its delivery went with it
        body = json.dumps(summary(run, delivery.delivery_id), sort_keys=True, default=str).encode("utf-8")
        began = datetime.now(UTC)
        clock = time.monotonic()
        status_code, error = self._post(delivery, body)
        attempt = {
            "at": began.isoformat(),
            "status_code": status_code,
            "error": error,
            "duration_s": round(time.monotonic() - clock, 3),
        }
        n = len(delivery.attempts) + 1
        if error is None:
            state, retry_at = DELIVERED, None
        elif n >= self.settings.tries:
            state, retry_at = FAILED, None
        else:
            state = PENDING
            retry_at = datetime.now(UTC) + timedelta(seconds=self.settings.backoff_s * 2 ** (n - 1))
        if not self._store.record(delivery.delivery_id, self._holder, attempt, state, retry_at):
            log.warning("webhook delivery %s: the lease expired during the attempt", delivery.delivery_id)
            return
        if self._on_attempt is not None:
            refused = error is not None and error.startswith(REFUSED)
            self._on_attempt("refused" if refused else {PENDING: "retried"}.get(state, state))
        log.info(
            "webhook delivery %s of run %s: attempt %d %s",
            delivery.delivery_id,
            delivery.run_id,
            n,
            state if error is None else f"failed ({error}); {state}",
        )

    def _post(self, delivery: Delivery, body: bytes) -> tuple[int | None, str | None]:
        """One attempt: (the receiver's status, None) when it took it (2xx), else the status if
        it answered and why the attempt failed."""
        try:
            target = self.policy.pin(delivery.url)
        except Refused as exc:
            return None, f"{REFUSED}{exc}"
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": "autobots-webhooks",
            SIGNATURE_HEADER: sign(self._secret, body),
            DELIVERY_HEADER: delivery.delivery_id,
            TIMESTAMP_HEADER: str(int(time.time())),
        }
        extensions = {"sni_hostname": target.sni} if target.sni else {}
        try:
            with (
                httpx.Client(
                    follow_redirects=False, trust_env=False, timeout=self.settings.timeout_s
                ) as client,
                client.stream(
                    "POST", target.url, content=body, headers=headers, extensions=extensions
                ) as answer,
            ):
                status = answer.status_code
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= status < 300:
            return status, None
        if 300 <= status < 400:
            return status, f"the receiver answered {status}: a redirect, not followed"
        return status, f"the receiver answered {status}"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
