"""A connection pool per thread behind the one shared HTTP client of the LLM calls.

Why: httpcore's synchronous pool looks at every connection it holds on every request it sends
and every response it closes (is it idle, has it expired, is its socket readable: one `poll(2)`
per idle connection). With a hundred runs in flight the shared pool holds a hundred connections
to the endpoint, and that scan became the largest single cost of a run: 17 ms of CPU of a 4-call
run's 51 ms (`bench/concurrency.py`, profiled with py-spy). A thread sends one request at a time,
so a pool of its own holds only the connections that thread uses (one per endpoint it calls) and
the scan is short whatever the load. Connections are still reused: run threads and request
threads are pooled, and each keeps its connections alive between calls.

The TLS context is built once and shared by every pool (loading the system's CA certificates costs
about 70 ms, which one per thread would spend again). A thread's pool is closed when the thread
is found gone, and every pool when the client is closed.
"""

from __future__ import annotations

import ssl
import threading
import weakref

import httpx

# A thread's own pool: it sends one request at a time, to few endpoints.
_PER_THREAD = httpx.Limits(max_connections=16, max_keepalive_connections=4, keepalive_expiry=30.0)


class PerThreadTransport(httpx.BaseTransport):
    def __init__(self, ssl_context: ssl.SSLContext, trust_env: bool = True) -> None:
        self._ssl = ssl_context
        self._trust_env = trust_env
        self._local = threading.local()
        self._lock = threading.Lock()
        # Every thread's pool, to close it once its thread is gone (or the client closes).
        self._pools: list[tuple[weakref.ref[threading.Thread], httpx.HTTPTransport]] = []
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pool: httpx.HTTPTransport | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = self._new_pool()
        return pool.handle_request(request)

    def _new_pool(self) -> httpx.HTTPTransport:
        pool = httpx.HTTPTransport(verify=self._ssl, trust_env=self._trust_env, limits=_PER_THREAD)
        with self._lock:
            if self._closed:
                raise RuntimeError("the HTTP client is closed")
            gone = [p for t, p in self._pools if (thread := t()) is None or not thread.is_alive()]
            self._pools = [(t, p) for t, p in self._pools if p not in gone]
            self._pools.append((weakref.ref(threading.current_thread()), pool))
        for old in gone:
            old.close()
        return pool

    def pools(self) -> int:
        """How many threads' pools are open (for tests and benchmarks)."""
        with self._lock:
            return len(self._pools)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pools, self._pools = [p for _, p in self._pools], []
        for pool in pools:
            pool.close()
