"""The Flask app behind the asyncio front: a request is one trip to a thread and one back.

a2wsgi's `WSGIMiddleware` hands every message across on its own trip: the body's read, the
response's start, each body chunk and its end are each a hop from the Flask thread to the loop,
the thread blocked on a future until the loop has run it. That is five hops for a JSON answer,
and in the profile of a 1-call chat (`bench/overhead.py --profile`) the loop's side of them was
the largest part of the HTTP front. Here:

- the body is already whole (`asgi.py` reads it on the loop first), so the thread gets it as
  bytes and never calls back for it;
- a response that is all in memory (Flask's `Response.is_streamed` is false: an envelope, a page,
  an error) comes back whole with its status and headers, and the loop sends it: one hop out, one
  back;
- a streamed one (a file, the OpenAI-compatible endpoint's chunks) is read chunk by chunk, each
  read in a thread after the previous chunk was sent, so a slow client holds the reading back
  (no response is buffered whole in memory). A client that goes away ends it: the next chunk is
  not read and the iterable is closed, as a WSGI server must, so a generator's `finally` runs
  (the OpenAI-compatible stream then cancels the run nobody reads). a2wsgi went on reading:
  gunicorn drops what is sent to a closed connection without a word. gunicorn also cancels the
  request 3 s after its client left, usually while a chunk is being read (a stream's heartbeat
  comes every 15 s): the iterable is then closed once that read returns, never by two threads at
  once, and never left to the garbage collector.

Each request runs in a copy of the loop's context (its context variables), as a2wsgi ran it.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

from a2wsgi.wsgi import build_environ
from flask import Flask, Response, request

# ASGI's callables, as the front (`asgi.py`) and this module use them.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("autobots.http")

# Set in the environ, by the last after-request hook, when the response is all in memory.
_WHOLE = "autobots.whole_response"


@dataclass
class _Started:
    """What the thread hands back: the response's start and either its whole body or the rest
    of its iterable to read."""

    status: int = 500
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    rest: Iterator[bytes] | None = None
    iterable: Iterable[bytes] | None = None


class FlaskCalls:
    """Runs the app's requests in a bounded pool of `threads` threads."""

    def __init__(self, app: Flask, threads: int) -> None:
        self.app = app
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="WSGI")
        # First in the list, so that it runs after every other app-wide after-request hook (Flask
        # runs them in reverse) and sees the response that is sent.
        app.after_request_funcs.setdefault(None, []).insert(0, _mark_whole)

    async def __call__(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """Serve one request whose body was read whole; `receive` tells of a client gone."""
        # a2wsgi types the environ as its own TypedDict; the app takes it as the dict it is.
        environ = cast("dict[str, Any]", build_environ(scope, io.BytesIO(body)))  # type: ignore[arg-type]
        context = contextvars.copy_context()
        starting = self._pool.submit(context.run, self._start, environ)
        try:
            started = await asyncio.wrap_future(starting)
        except asyncio.CancelledError:  # gunicorn gave up on the request: close what it returns
            starting.add_done_callback(lambda job: self._close(_iterable_of(job), context))
            raise
        await send({"type": "http.response.start", "status": started.status, "headers": started.headers})
        if started.rest is None:
            await send({"type": "http.response.body", "body": b"".join(started.body), "more_body": False})
            return
        gone = asyncio.ensure_future(disconnected(receive))
        reading: Future[bytes | None] | None = None
        try:
            for first in started.body:
                await send({"type": "http.response.body", "body": first, "more_body": True})
            while not gone.done():
                reading = self._pool.submit(context.run, _next, started.rest)
                chunk = await asyncio.wrap_future(reading)
                reading = None
                if chunk is None:
                    break
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            gone.cancel()
            if reading is None:
                self._close(started.iterable, context)
            else:  # cancelled (gunicorn gives up 3 s after a disconnect) while a chunk is read
                reading.add_done_callback(lambda _job: self._close(started.iterable, context))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _close(self, iterable: Iterable[bytes] | None, context: contextvars.Context) -> None:
        """Close a streamed iterable in a pool thread, in its request's context, once nothing
        reads it: two threads never run it (or enter its context) at once, and its `finally`
        (a stream's cancel of its run) runs now, not when the garbage collector finds it."""
        close = getattr(iterable, "close", None)
        if close is None:
            return

        def run() -> None:
            try:
                context.run(close)
            except Exception:
                log.exception("a streamed response could not be closed")

        try:
            self._pool.submit(run)
        except RuntimeError:  # the pool is shut down: the process is ending
            log.info("a streamed response was not closed: the server is stopping")

    def _start(self, environ: dict[str, Any]) -> _Started:
        """In a pool thread: the app called, and the response read whole when it is in memory."""
        started = _Started()
        began = False

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal began
            if exc_info is not None and began:
                raise exc_info[1].with_traceback(exc_info[2])
            began = True
            started.status = int(status.split(" ", 1)[0])
            started.headers = [
                (k.strip().lower().encode("latin1"), v.strip().encode("latin1")) for k, v in headers
            ]
            return started.body.append  # WSGI's write(): before the iterable's chunks

        iterable = self.app(environ, start_response)
        if environ.get(_WHOLE):
            try:
                started.body.extend(iterable)
            finally:
                close = getattr(iterable, "close", None)
                if close is not None:
                    close()
            return started
        started.iterable = iterable
        started.rest = iter(iterable)
        if not began:  # an app may start its response at its first chunk
            first = next(started.rest, None)
            if first is not None:
                started.body.append(first)
        return started


async def disconnected(receive: Receive) -> None:
    """Returns once the client has gone (the request's body read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _iterable_of(job: Future[_Started]) -> Iterable[bytes] | None:
    """The streamed iterable a request's start returned (None if it failed or was whole)."""
    if job.cancelled() or job.exception() is not None:
        return None
    return job.result().iterable


def _next(rest: Iterator[bytes]) -> bytes | None:
    """The next chunk, None at the end."""
    return next(rest, None)


def _mark_whole(response: Response) -> Response:
    if not response.is_streamed:
        request.environ[_WHOLE] = True
    return response
