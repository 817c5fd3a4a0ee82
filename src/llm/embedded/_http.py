"""The model server's HTTP API: llama_cpp.server's routes behind autobots' own.

Runs in the server process (no autobots imports).  What differs from the stock server and why is
listed in ``_server_main``'s docstring; this module is the request side of it: the chat route
(streamed, whole, or with tools), cancelling by tag, the lock-free health route and the queue
route (``_queue``: where a tagged caller stands and how long it waits).
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime,
# and their request types are local to ``build_app``.
import asyncio
import contextlib
import json
import os
import re
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

from . import _tool_calls as tool_calls
from ._llama import GenerationCancelled
from ._models import ResidentModels
from ._protocol import CANCEL_PATH, HEALTH_PATH, QUEUE_PATH, TAG_HEADER
from ._queue import QueueTracker


class TaggedGenerations:
    """The stop callbacks of the generations in flight, by their client's tag."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stops: dict[str, list[Callable[[], None]]] = {}

    @contextlib.asynccontextmanager
    async def track(self, tag: str | None, stop: Callable[[], None]) -> AsyncIterator[None]:
        if not tag:
            yield
            return
        with self._lock:
            self._stops.setdefault(tag, []).append(stop)
        try:
            yield
        finally:
            with self._lock:
                stops = self._stops.get(tag, [])
                if stop in stops:
                    stops.remove(stop)
                if not stops:
                    self._stops.pop(tag, None)

    def cancel(self, tag: str) -> int:
        """Stop every generation tagged `tag` (called on the event loop); how many there were."""
        with self._lock:
            stops = list(self._stops.get(tag, []))
        for stop in stops:
            stop()
        return len(stops)


def build_app(config: dict[str, Any], models: ResidentModels, queue: QueueTracker) -> Any:
    """The FastAPI app: llama_cpp.server's router behind our chat, health, cancel and queue routes."""
    import anyio
    import llama_cpp.server.app as llama_app
    from fastapi import APIRouter, Depends, FastAPI, Query, Request
    from llama_cpp.server.errors import RouteErrorHandler
    from llama_cpp.server.settings import ServerSettings
    from llama_cpp.server.types import CreateChatCompletionRequest
    from pydantic import BaseModel
    from sse_starlette.sse import EventSourceResponse
    from starlette.responses import Response
    from starlette_context.middleware import RawContextMiddleware
    from starlette_context.plugins import RequestIdPlugin

    needed = ("_llama_proxy", "get_llama_proxy", "prepare_request_resources", "authenticate", "router")
    if not all(hasattr(llama_app, name) for name in needed):
        raise RuntimeError(
            f"unsupported llama_cpp.server layout in llama-cpp-python {llama_app.llama_cpp.__version__}"
        )

    llama_app.set_server_settings(ServerSettings(api_key=config["api_key"], interrupt_requests=False))
    # Read per request by llama_app.get_llama_proxy. Typed as its own LlamaProxy; ResidentModels
    # stands in for it (called with a model name, it returns that resident Llama).
    llama_app._llama_proxy = models  # type: ignore[assignment]

    class StreamOptions(BaseModel):
        include_usage: bool = False

    class ChatRequest(CreateChatCompletionRequest):
        stream_options: StreamOptions | None = None
        # OpenAI's newer name for max_tokens, which some clients send instead.
        max_completion_tokens: int | None = None

    tagged = TaggedGenerations()

    async def _publish(
        send_chan: Any, body: ChatRequest, kwargs: dict[str, Any], include_usage: bool, tag: str | None
    ) -> None:
        """Stream one generation, holding the model lock from the first token to the last.

        The stock publisher pulls each token with a separate thread-pool call, so the
        model sits idle while the event loop encodes and sends the previous chunk (about
        8% of generation speed on 2 cores).  Here one worker thread generates without
        pausing and hands chunks to the loop through a queue.  A failure mid-stream (such
        as a prompt longer than the context) becomes an OpenAI-style ``error`` event,
        which the OpenAI SDK raises as an APIError, instead of a dropped connection.
        """
        loop = asyncio.get_running_loop()
        chunks_out: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()
        entry = queue.join(tag, kwargs.get("max_tokens"))

        def produce(llama: Any) -> None:
            llama.cancel, llama.entry = cancelled, entry
            try:
                chunks = llama.create_chat_completion(**kwargs)
                for chunk in _with_usage(chunks, llama) if include_usage else chunks:
                    if cancelled.is_set():
                        break
                    loop.call_soon_threadsafe(chunks_out.put_nowait, ("chunk", chunk))
            except Exception as exc:
                loop.call_soon_threadsafe(chunks_out.put_nowait, ("error", exc))
            finally:
                llama.cancel, llama.entry = None, None
                loop.call_soon_threadsafe(chunks_out.put_nowait, ("end", None))

        # Cancelled by tag: stop generating, or stop waiting for the model if still queued; the
        # stream then just ends (send_chan is closed on the way out whatever happened).
        async with send_chan:
            with anyio.CancelScope() as scope, _queued(queue, entry):

                def stop() -> None:
                    cancelled.set()
                    scope.cancel()

                async with (
                    tagged.track(tag, stop),
                    contextlib.asynccontextmanager(llama_app.get_llama_proxy)() as proxy,
                ):
                    queue.start(entry)
                    llama = llama_app.prepare_request_resources(body, proxy, body.model, kwargs)
                    failed = False
                    try:
                        async with anyio.create_task_group() as group:
                            # A worker thread cannot be interrupted; the task group waits for
                            # it, so the model lock is only released once generation stopped.
                            group.start_soon(anyio.to_thread.run_sync, produce, llama)
                            try:
                                while True:
                                    kind, item = await chunks_out.get()
                                    if kind == "chunk":
                                        await send_chan.send({"data": json.dumps(item)})
                                    elif kind == "error":
                                        failed = True
                                        error = {"error": _error_body(item)}
                                        await send_chan.send({"data": json.dumps(error)})
                                    else:
                                        break
                                if not failed:
                                    await send_chan.send({"data": "[DONE]"})
                            finally:
                                # Here, inside the task group: when the client goes away this
                                # task is cancelled, and the group then waits for the worker
                                # thread; the flag must be up before that wait, or the thread
                                # generates to max_tokens holding the lock others queue on.
                                cancelled.set()
                    finally:
                        cancelled.set()

    async def _complete(request: Request, body: ChatRequest, kwargs: dict[str, Any], tag: str | None) -> Any:
        """One non-streaming completion that stops as soon as its client disconnects.

        A caller that gave up (its timeout, a cancelled run) would otherwise leave the model
        generating up to ``max_tokens`` for nobody, while every other request waits for the
        model lock.  A watcher task waits for the ASGI ``http.disconnect`` (the body has been
        read, so the next message is exactly that) and then raises the worker's cancel flag
        and cancels the wait, which also covers a client leaving while still queued.
        """
        cancelled = threading.Event()
        outcome: dict[str, Any] = {}
        entry = queue.join(tag, kwargs.get("max_tokens"))

        def generate(llama: Any) -> Any:
            llama.cancel, llama.entry = cancelled, entry
            try:
                return llama.create_chat_completion(**kwargs)
            finally:
                llama.cancel, llama.entry = None, None

        async def watch_disconnect(scope: anyio.CancelScope) -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            cancelled.set()
            scope.cancel()

        def stop() -> None:  # the client cancelled by tag: like a disconnect
            cancelled.set()
            group.cancel_scope.cancel()

        with _queued(queue, entry):
            async with anyio.create_task_group() as group, tagged.track(tag, stop):
                group.start_soon(watch_disconnect, group.cancel_scope)
                try:
                    async with contextlib.asynccontextmanager(llama_app.get_llama_proxy)() as proxy:
                        queue.start(entry)
                        llama = llama_app.prepare_request_resources(body, proxy, body.model, kwargs)
                        # Not abandoned on cancel: the lock is held until the thread has stopped.
                        outcome["result"] = await anyio.to_thread.run_sync(generate, llama)
                except Exception as exc:  # re-raised outside the group, unwrapped, for the route's handler
                    outcome["error"] = exc
                finally:
                    group.cancel_scope.cancel()
        error = outcome.get("error")
        if error is not None and not isinstance(error, GenerationCancelled):
            raise error
        if "result" not in outcome:
            # Nobody is listening; 499 ("client closed request") only shows in logs.
            return Response(status_code=499)
        return outcome["result"]

    router = APIRouter(route_class=RouteErrorHandler)

    @router.get(HEALTH_PATH)
    async def health() -> dict[str, Any]:
        return {
            "instance": config["instance"],
            "pid": os.getpid(),
            **models.status(),
            "queue": queue.counts(),
            "loading": models.loads.report(),
        }

    @router.get(QUEUE_PATH, dependencies=[Depends(llama_app.authenticate)])
    async def queue_report(tag: str | None = Query(default=None, max_length=200)) -> dict[str, Any]:
        """Where the caller's requests tagged ``tag`` stand; lock-free, like health.  Behind the
        server's key: a tag is a run's id, and the queue is nobody else's business."""
        return {"instance": config["instance"], **queue.report(tag)}

    @router.post(CANCEL_PATH + "/{tag}", dependencies=[Depends(llama_app.authenticate)])
    async def cancel(tag: str) -> dict[str, Any]:
        return {"cancelled": tagged.cancel(tag)}

    @router.post("/v1/chat/completions", dependencies=[Depends(llama_app.authenticate)])
    async def chat(request: Request, body: ChatRequest) -> Any:
        tag = request.headers.get(TAG_HEADER)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        if body.max_tokens is None:
            # llama.cpp's default is "until the context is full": on 2 cores a rambling
            # small model could hold the shared server for minutes.
            body.max_tokens = body.max_completion_tokens or config["default_max_tokens"]
        excluded = {"n", "logit_bias_type", "user", "min_tokens", "stream_options", "max_completion_tokens"}
        kwargs = body.model_dump(exclude=excluded)
        if tool_calls.wants_tools(kwargs):
            return await _with_tools(request, body, kwargs, tag, include_usage)
        if kwargs.get("stream", False):
            # Checked before the 200 and the event stream start, so it is a plain 404.
            models.check(body.model)
            send_chan, recv_chan = anyio.create_memory_object_stream[dict[str, str]](10)
            return EventSourceResponse(
                recv_chan,
                data_sender_callable=partial(_publish, send_chan, body, kwargs, include_usage, tag),
                sep="\n",
            )
        return await _complete(request, body, kwargs, tag)

    async def _with_tools(
        request: Request, body: ChatRequest, kwargs: dict[str, Any], tag: str | None, include_usage: bool
    ) -> Any:
        """A request that offers tools: generated whole, its calls read out (see _tool_calls.py),
        then answered as a completion or as a stream of chunks."""
        stream = bool(kwargs.pop("stream", False))
        tools = kwargs["tools"]
        models.check(body.model)
        body.stream = False
        kwargs.update(
            stream=False, tool_choice=None, messages=tool_calls.prepare_messages(kwargs["messages"])
        )
        result = await _complete(request, body, kwargs, tag)
        if isinstance(result, Response):
            return result
        completion = tool_calls.to_tool_calls(result, tools)
        if not stream:
            return completion

        async def chunks() -> AsyncIterator[dict[str, str]]:
            for chunk in tool_calls.as_chunks(completion, include_usage):
                yield {"data": json.dumps(chunk)}
            yield {"data": "[DONE]"}

        return EventSourceResponse(chunks(), sep="\n")

    app = FastAPI(title="autobots embedded models", version=llama_app.llama_cpp.__version__)
    app.add_middleware(RawContextMiddleware, plugins=(RequestIdPlugin(),))
    app.include_router(router)  # first, so our chat route shadows the stock one
    app.include_router(llama_app.router)
    return app


def _error_body(exc: BaseException) -> dict[str, Any]:
    message = str(exc)
    match = re.search(r"Requested tokens \((\d+)\) exceed context window of (\d+)", message)
    if match:
        # Worded like OpenAI's (and the non-streaming path's) error, so callers match one text.
        message = (
            f"This model's maximum context length is {match.group(2)} tokens. "
            f"However, you requested {match.group(1)} tokens. Please reduce the length of the messages."
        )
        return {"message": message, "type": "invalid_request_error", "code": "context_length_exceeded"}
    print(f"generation failed: {message}", file=sys.stderr, flush=True)
    return {"message": message, "type": "server_error", "code": None}


def _with_usage(chunks: Iterator[dict[str, Any]], llama: Any) -> Iterator[dict[str, Any]]:
    """Pass the chunks through, then add OpenAI's closing usage chunk (empty ``choices``)."""
    last: dict[str, Any] | None = None
    for chunk in chunks:
        last = chunk
        yield chunk
    if last is not None:
        prompt_tokens, completion_tokens = llama.last_usage
        yield {
            "id": last["id"],
            "object": "chat.completion.chunk",
            "created": last["created"],
            "model": last["model"],
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


@contextlib.contextmanager
def _queued(queue: QueueTracker, entry: Any) -> Iterator[None]:
    """The request counts as waiting or served until it is done, whatever ends it."""
    try:
        yield
    finally:
        queue.leave(entry)
