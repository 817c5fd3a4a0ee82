"""The server's front door: an ASGI app for gunicorn's asyncio worker (`worker_class: asgi`).

Why not a thread per connection: with one, 260 idle listeners on a run that waits for input, or
300 connections that never finish their headers, took every thread and `/api/health` stopped
answering. Here a connection is an asyncio task until it has a whole request: slow headers and
slow bodies cost a socket, not a thread. Then
- `GET /api/runs/<id>/events` is served on the event loop: the listener waits on an
  `asyncio.Event` that the run's thread sets (`RunManager.feed`), and holds no thread while it
  waits; a closed listener is noticed at once (`http.disconnect`) and unsubscribes;
- everything else goes to the Flask app in a bounded thread pool, body already read: one hop to
  a thread and one back (`flask_calls.py`).
The event stream runs Flask's own before/after-request hooks in a request context, so it is
signed in, rate limited and given headers exactly as every other route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from a2wsgi.wsgi import build_environ
from flask import Flask, Response, request
from pydantic import ValidationError

from ..schemas.api import EventsQuery
from ..services.runs import EventFeed
from ..settings import Settings
from . import sse
from .auth import run_owner
from .context import services
from .errors import envelope
from .flask_calls import FlaskCalls, Receive, Scope, Send, disconnected

log = logging.getLogger("autobots.http")

EVENTS_PATH = re.compile(r"/api/runs/([^/]{1,100})/events")
# A request whose body has not fully arrived by then is dropped: it must not hold a thread.
BODY_TIMEOUT_S = 30.0


class Front:
    def __init__(self, app: Flask, settings: Settings) -> None:
        self.app = app
        self._flask = FlaskCalls(app, settings.server_threads)
        # Short calls for event streams (sign-in, ownership, reading events), never a wait.
        self._calls = ThreadPoolExecutor(max_workers=16, thread_name_prefix="stream")
        self._max_body = settings.max_request_bytes
        self._heartbeat_s = settings.runs.heartbeat_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
        elif scope["method"] == "GET" and (match := EVENTS_PATH.fullmatch(scope["path"])):
            await self._events(scope, receive, send, match.group(1))
        else:
            body = await self._read_body(receive, send)
            if body is not None:
                await self._flask(scope, body, receive, send)

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body (at most one byte past the cap: Flask then answers 413 itself)."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    if size <= self._max_body:
                        chunks.append(chunk)
                        size += len(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            log.info("request body not received in time", extra={"fields": {"status": 408}})
            await _send_json(
                send, 408, b'{"status":false,"message":"request body not received in time","data":null}'
            )
            return None
        return b"".join(chunks)

    # event streams -------------------------------------------------------------------------------

    async def _events(self, scope: Scope, receive: Receive, send: Send, run_id: str) -> None:
        loop = asyncio.get_running_loop()
        # a2wsgi types the environ as its own TypedDict; Flask takes it as the dict it is.
        environ = cast("dict[str, Any]", build_environ(scope, _NoBody()))  # type: ignore[arg-type]
        refused, feed, after, headers = await loop.run_in_executor(self._calls, self._open, environ, run_id)
        if refused is not None:
            await _send_response(send, refused)
            return
        assert feed is not None
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self._pump(feed, after, receive, send)
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, feed: EventFeed, after: int, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        # One wake-up scheduled at a time: a run's burst of events costs the loop one callback
        # (and one write to its self-pipe), not one per event.
        scheduled = [False]

        def on_loop() -> None:  # cleared before set, so no event is ever missed
            scheduled[0] = False
            wake.set()

        def wake_up() -> None:  # called from the run's thread, its events already appended
            if not scheduled[0]:
                scheduled[0] = True
                loop.call_soon_threadsafe(on_loop)

        # In a thread: subscribing may ask Redis where the stream ends (never block the loop).
        unsubscribe = await loop.run_in_executor(self._calls, feed.subscribe, wake_up)
        gone = asyncio.ensure_future(disconnected(receive))
        try:
            await send({"type": "http.response.body", "body": sse.RETRY, "more_body": True})
            while True:
                wake.clear()
                # A live run's events are read here at once; what may wait (a lock, the
                # database, Redis) in a thread, never on the loop.
                taken = feed.take_now(after)
                if taken is None:
                    taken = await loop.run_in_executor(self._calls, feed.take, after)
                events, ended = taken
                if events:  # what piled up goes out in one write
                    body = b"".join(sse.encode(*event) for event in events)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    after = events[-1][0]
                if ended:
                    return
                woken = asyncio.ensure_future(wake.wait())
                done, _ = await asyncio.wait(
                    {woken, gone}, timeout=self._heartbeat_s, return_when=asyncio.FIRST_COMPLETED
                )
                woken.cancel()
                if gone in done:
                    return
                if not done:
                    await send({"type": "http.response.body", "body": sse.KEEPALIVE, "more_body": True})
        finally:
            unsubscribe()
            gone.cancel()

    def _open(
        self, environ: dict[str, Any], run_id: str
    ) -> tuple[Response | None, EventFeed | None, int, list[tuple[bytes, bytes]]]:
        """In a request context, as Flask serves any route: sign-in, rate limit, ownership.
        Returns the refusal to send, or the run's feed, where to resume and the headers."""
        app = self.app
        with app.request_context(environ):
            try:
                if request.routing_exception is not None:  # e.g. a Host the app does not trust
                    raise request.routing_exception
                early = app.preprocess_request()
                if early is not None:
                    return app.process_response(app.make_response(early)), None, 0, []
                query = EventsQuery.model_validate(request.args.to_dict())
                after = sse.last_event_id(request.headers.get("Last-Event-ID"), query.last_event_id)
                feed = services().runs.feed(run_owner(query.user_id), run_id)
                ok = app.process_response(
                    app.response_class(mimetype="text/event-stream", headers={"X-Accel-Buffering": "no"})
                )
            except ValidationError as exc:
                return app.process_response(app.make_response(app.handle_user_exception(exc))), None, 0, []
            except Exception as exc:
                try:
                    refused = app.make_response(app.handle_user_exception(exc))
                except Exception:
                    refused = app.make_response(envelope(False, "internal error", code=500))
                return app.process_response(refused), None, 0, []
            headers = [(k.lower().encode("latin1"), v.encode("latin1")) for k, v in ok.headers.items()]
            return None, feed, after, headers


class _NoBody:
    """The wsgi.input of a GET: empty."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def __iter__(self) -> Any:
        return iter(())


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop here: the app is built before the worker serves, and live runs
    are ended by the worker's exit hook (`server.py`)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _send_response(send: Send, response: Response) -> None:
    headers = [(k.lower().encode("latin1"), v.encode("latin1")) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.get_data(), "more_body": False})


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
