"""The managed local model server process: llama_cpp.server's OpenAI API plus what autobots needs.

It is started by ``autobots.llm.embedded.server`` as ``python <this file> --config FILE``,
by path and not as ``-m autobots...``, so it works whichever way the parent found the
``autobots`` package; it therefore imports nothing from autobots.

Why not plain ``python -m llama_cpp.server --config_file``?  Its routes, request types,
request lock and error handling are reused unchanged, but these behaviours of its stock
entry point are wrong for a server shared by several AutoGen agents and processes:

1. ``interrupt_requests`` defaults to true: a queued request *cuts off* the stream in
   progress, so two agents talking at once would silently get truncated answers.  Here it
   is off; requests queue on llama_cpp.server's outer/inner anyio locks and run one at a
   time, each to completion.
2. Its model proxy keeps one model loaded and reloads on every switch (dropping the
   prompt cache), and it silently answers with the *default* model when asked for an
   unknown name.  Here every configured model stays resident once loaded (lazily), and an
   unknown name is a 404.
3. Streaming responses carry no ``usage`` (it ignores ``stream_options``), and AutoGen
   streams with ``include_usage``; token counts would read 0.  Here the final chunk carries
   exact usage, counted from the same token lists the non-streaming path reports.
4. Its stream publisher pulls every token through a separate thread-pool call, and an
   error mid-stream drops the connection.  Here one worker thread generates while the
   event loop sends, and errors become OpenAI-style ``error`` events.
5. Without ``max_tokens`` it generates until the context is full; here a configurable cap
   applies (``default_max_tokens``), and OpenAI's newer ``max_completion_tokens`` is honoured.
6. Its server-side prompt cache entries copy ``n_batch x n_vocab`` logits each (311 MB for
   Qwen) outside the cache's size accounting; here they keep one row (see ``save_state``).
7. It binds a port it is told; here the socket is bound to 127.0.0.1:0 before anything
   else, so there is no window between choosing a free port and listening on it.
8. It runs until killed; here a watchdog stops it when no registered client process is
   alive (after ``linger_s``), so a crashed or SIGKILLed autobots never leaves an orphan.
9. A lock-free ``/autobots/health`` lets clients check identity and liveness while a long
   generation holds the model lock (``/v1/models`` waits for that lock).  It also reports
   each loaded model's counters (generations, cancelled ones, prompt tokens received vs
   actually evaluated, tokens generated), so the prompt cache and cancellation can be
   observed from outside.
10. A client that goes away (closed stream, timed-out or cancelled call) stops its
   generation within one token or one prompt batch, streaming or not; the stock server
   keeps generating to ``max_tokens`` while holding the model lock every other request
   queues on.
11. Models are loaded on first use, and only from a file of the expected size: the parent
   prepares (assembles, verifies) each model's weights when it is first asked for, so
   offering a model costs nothing until somebody uses it.
12. The stock server runs a fixed number of llama.cpp threads that spin while waiting for
   each other, which collapses on a busy machine; here ``thread_policy`` applies (the
   ``_threads`` module next to this file, loaded by path, chooses the count before each
   evaluation), and ``/autobots/health`` reports the count llama.cpp holds.
13. The stock server answers OpenAI ``tools`` with plain text; here a request that offers tools
   gets ``tool_calls`` (the ``_tool_calls`` module next to this file: the model's own template
   and its ``<tool_call>`` blocks), streamed or not.
"""

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

HEALTH_PATH = "/autobots/health"
# A client may tag its requests (``TAG_HEADER: <tag>``) and stop all of them at once with
# ``POST CANCEL_PATH/<tag>``: autobots tags each run's calls with the run's id, so cancelling a
# run frees the model at once instead of after its pending reply is generated for nobody.
TAG_HEADER = "X-Autobots-Run"
CANCEL_PATH = "/autobots/cancel"


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone.

    Pairing pid with start time makes liveness checks immune to pid reuse: a recycled pid
    has a different start time.  Off Linux (no /proc) it degrades to a plain existence check.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "unknown"
        return "unknown"
    fields = raw[raw.rfind(")") + 2 :].split()
    # Field 22 of /proc/PID/stat is starttime; fields[0] here is field 3 (state).
    # A zombie has exited: it only waits for its parent to reap it.
    if fields[0] == "Z":
        return None
    return fields[19]


def client_file_name(pid: int) -> str | None:
    """The name a client registers under: ``<pid>-<starttime>``, None if ``pid`` is not alive."""
    start = process_start_time(pid)
    return None if start is None else f"{pid}-{start}"


def client_alive(name: str) -> bool:
    """Whether the process that registered ``name`` is the same process and still running."""
    pid_text, _, start = name.partition("-")
    if not pid_text.isdigit():
        return False
    current = process_start_time(int(pid_text))
    return current is not None and (current == start or "unknown" in (current, start))


def live_clients(clients_dir: Path, prune: bool) -> list[str]:
    """Registered clients still alive; with ``prune``, files of dead clients are removed."""
    alive: list[str] = []
    try:
        entries = list(clients_dir.iterdir())
    except FileNotFoundError:
        return alive
    for entry in entries:
        if client_alive(entry.name):
            alive.append(entry.name)
        elif prune:
            entry.unlink(missing_ok=True)
    return alive


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class GenerationCancelled(Exception):
    """The client of a generation went away while its prompt was being read."""


def _make_llama_class() -> type:
    """A ``Llama`` that counts what it does and can be stopped from another thread.

    ``_create_completion`` reports usage only on its non-streaming path; both paths drive
    ``generate`` with the full prompt token list and stop at the first end-of-generation
    token without appending it, so counting here matches the non-streaming figures exactly.

    ``cancel`` is set by the request handler for the duration of one generation (requests
    run one at a time under llama_cpp.server's lock, so one attribute suffices): once the
    event is set, generation ends after the current token, and prompt reading stops before
    the next ``n_batch`` tokens (``GenerationCancelled``).  llama.cpp cannot be interrupted
    inside a batch, so that is the finest grain there is.
    """
    import llama_cpp

    class MeteredLlama(llama_cpp.Llama):
        last_usage: tuple[int, int] = (0, 0)
        cancel: threading.Event | None = None
        # Sets the thread count before each evaluation (see _threads.py); None: as loaded.
        governor: Any = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Counters since load, read by /autobots/health; plain ints, written by the one
            # generating thread.  "prompt_tokens" is what requests sent, "prompt_tokens_evaluated"
            # what llama.cpp actually had to read after the prefix/prompt-cache reuse.
            self.stats = {
                "generations": 0,
                "cancelled": 0,
                "prompt_tokens": 0,
                "prompt_tokens_evaluated": 0,
                "completion_tokens": 0,
            }
            self._reading_prompt = False

        def _cancelled(self) -> bool:
            return self.cancel is not None and self.cancel.is_set()

        def eval(self, tokens: Any) -> None:
            # Fed one batch at a time (exactly what the stock eval does in its own loop), so a
            # long prompt whose client left stops within one batch, not after the whole prompt.
            if len(tokens) == 0:
                super().eval(tokens)  # keeps the stock side effect (trims the KV cache)
                return
            step = max(1, int(self.n_batch))
            for i in range(0, len(tokens), step):
                if self._reading_prompt and self._cancelled():
                    self.stats["cancelled"] += 1
                    raise GenerationCancelled("the client went away")
                batch = tokens[i : i + step]
                if self.governor is not None:
                    self.governor.before_eval(self.ctx)
                super().eval(batch)
                if self._reading_prompt:
                    self.stats["prompt_tokens_evaluated"] += len(batch)

        def generate(
            self, tokens: Sequence[int], *args: Any, **kwargs: Any
        ) -> Generator[int, Sequence[int] | None, None]:
            prompt_tokens = len(tokens)
            completion_tokens = 0
            self.last_usage = (prompt_tokens, 0)
            self.stats["generations"] += 1
            self.stats["prompt_tokens"] += prompt_tokens
            inner = super().generate(tokens, *args, **kwargs)
            sent: Any = None
            # The first step of the inner generator reads the prompt; later ones one token each.
            self._reading_prompt = True
            try:
                while True:
                    try:
                        token = inner.send(sent)
                    except StopIteration:
                        return
                    self._reading_prompt = False
                    if self._cancelled():
                        # Ends like a length cut; nobody is left to read the reply.
                        self.stats["cancelled"] += 1
                        return
                    if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                        completion_tokens += 1
                        self.stats["completion_tokens"] += 1
                        self.last_usage = (prompt_tokens, completion_tokens)
                    sent = yield token
            finally:
                self._reading_prompt = False
                inner.close()

        def save_state(self) -> Any:
            """A prompt-cache entry without the stock ``n_batch x n_vocab`` logits copy.

            The stock state copies 512 rows of logits (311 MB for Qwen's 152k vocabulary)
            that the RAM cache does not even count against its capacity: a transient
            311 MB allocation per request, and many GB held by a few dozen entries.  Only
            the last row is kept: after ``load_state`` the model re-evaluates at least the
            last prompt token before sampling (``_requires_eval``), and ``load_state``
            broadcasts the row it is given.
            """
            ctx = self._ctx.ctx
            size = llama_cpp.llama_state_get_size(ctx)
            buffer = (ctypes.c_uint8 * size)()
            written = int(llama_cpp.llama_state_get_data(ctx, buffer, size))
            if written > size:
                raise RuntimeError("llama_state_get_data overran its buffer")
            return llama_cpp.LlamaState(
                input_ids=self.input_ids.copy(),
                scores=self._scores[-1:].copy(),
                n_tokens=self.n_tokens,
                llama_state=ctypes.string_at(buffer, written),
                llama_state_size=written,
                seed=self._seed,
            )

    return MeteredLlama


class ResidentModels:
    """Stand-in for llama_cpp.server's ``LlamaProxy``: every configured model stays loaded.

    It is only ever called under llama_cpp.server's request lock, so loads never race with
    generation; the threading lock additionally covers the startup preload and health reads.
    """

    def __init__(self, models: list[dict[str, Any]], threads: Any) -> None:
        self._threads = threads  # the _threads module, loaded by path
        self._specs = {m["alias"]: m for m in models}
        self._default = models[0]["alias"]
        self._loaded: dict[str, Any] = {}
        self._chat_formats: dict[str, str] = {}
        self._lock = threading.Lock()
        self._llama_class = _make_llama_class()

    def __call__(self, model: str | None = None) -> Any:
        return self.load(self.check(model))

    def check(self, model: str | None) -> str:
        """The alias to use for ``model``; an unknown name is a 404, never a substitute."""
        from fastapi import HTTPException

        alias = model or self._default
        if alias not in self._specs:
            raise HTTPException(
                status_code=404,
                detail=f"Model {alias!r} is not served here; served models: {', '.join(self._specs)}",
            )
        if alias not in self._loaded:
            self._check_prepared(self._specs[alias])
        return alias

    @staticmethod
    def _check_prepared(spec: dict[str, Any]) -> None:
        """503 unless the model's file is in place: the parent prepares (assembles, verifies)
        a model's weights when it is first asked for it, so an offered model nobody asked for
        through autobots yet has no file, or only a partial one, to load."""
        from fastapi import HTTPException

        try:
            size = Path(spec["path"]).stat().st_size
        except OSError:
            size = -1
        if size != spec["size"]:
            raise HTTPException(
                status_code=503,
                detail=f"Model {spec['alias']!r} is offered but its weights are not prepared yet; "
                "ask for it through autobots, which assembles and verifies them first",
            )

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._specs))

    def load(self, alias: str) -> Any:
        with self._lock:
            llama = self._loaded.get(alias)
            if llama is None:
                llama = self._load(self._specs[alias])
                self._loaded[alias] = llama
                self._chat_formats[alias] = str(llama.chat_format)
            return llama

    def _load(self, spec: dict[str, Any]) -> Any:
        import llama_cpp

        self._check_prepared(spec)
        llama = self._llama_class(
            model_path=spec["path"],
            n_ctx=spec["n_ctx"],
            n_batch=spec["n_batch"],
            n_ubatch=spec["n_batch"],
            n_threads=spec["n_threads"],
            n_threads_batch=spec["n_threads"],
            # The server default logits_all=True keeps logits for every prompt token:
            # n_ctx x vocab floats (5 GB for Qwen at 8k) and slower prompt processing,
            # only to serve logprobs, which AutoGen never asks for.
            logits_all=False,
            use_mlock=False,
            verbose=False,
        )
        if llama.chat_format == "llama-2":
            # llama.cpp falls back to llama-2 prompts when the GGUF has no chat template;
            # answering in the wrong format would look like a model that cannot follow chat.
            raise RuntimeError(f"{spec['path']} has no chat template in its GGUF metadata")
        if spec["cache_bytes"] > 0:
            llama.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=spec["cache_bytes"]))
        llama.governor = self._threads.ThreadGovernor(spec["thread_policy"], spec["n_threads"])
        return llama

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "models": list(self._specs),
                "loaded": dict(self._chat_formats),
                "stats": {alias: dict(llama.stats) for alias, llama in self._loaded.items()},
                "threads": {alias: llama.governor.status(llama.ctx) for alias, llama in self._loaded.items()},
            }

    def close(self) -> None:
        with self._lock:
            for llama in self._loaded.values():
                with contextlib.suppress(Exception):
                    llama.close()
            self._loaded.clear()


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


def build_app(config: dict[str, Any], models: ResidentModels) -> Any:
    """The FastAPI app: llama_cpp.server's router behind our chat route and health route."""
    import anyio
    import llama_cpp.server.app as llama_app
    from fastapi import APIRouter, Depends, FastAPI, Request
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
    tool_calls = _load_sibling("_tool_calls")

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
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def produce(llama: Any) -> None:
            llama.cancel = cancelled
            try:
                chunks = llama.create_chat_completion(**kwargs)
                for chunk in _with_usage(chunks, llama) if include_usage else chunks:
                    if cancelled.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, ("chunk", chunk))
            except Exception as exc:
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
            finally:
                llama.cancel = None
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

        # Cancelled by tag: stop generating, or stop waiting for the model if still queued; the
        # stream then just ends (send_chan is closed on the way out whatever happened).
        async with send_chan:
            with anyio.CancelScope() as scope:

                def stop() -> None:
                    cancelled.set()
                    scope.cancel()

                async with (
                    tagged.track(tag, stop),
                    contextlib.asynccontextmanager(llama_app.get_llama_proxy)() as proxy,
                ):
                    llama = llama_app.prepare_request_resources(body, proxy, body.model, kwargs)
                    failed = False
                    try:
                        async with anyio.create_task_group() as group:
                            # A worker thread cannot be interrupted; the task group waits for
                            # it, so the model lock is only released once generation stopped.
                            group.start_soon(anyio.to_thread.run_sync, produce, llama)
                            try:
                                while True:
                                    kind, item = await queue.get()
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

        def generate(llama: Any) -> Any:
            llama.cancel = cancelled
            try:
                return llama.create_chat_completion(**kwargs)
            finally:
                llama.cancel = None

        async def watch_disconnect(scope: anyio.CancelScope) -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            cancelled.set()
            scope.cancel()

        def stop() -> None:  # the client cancelled by tag: like a disconnect
            cancelled.set()
            group.cancel_scope.cancel()

        async with anyio.create_task_group() as group, tagged.track(tag, stop):
            group.start_soon(watch_disconnect, group.cancel_scope)
            try:
                async with contextlib.asynccontextmanager(llama_app.get_llama_proxy)() as proxy:
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
        return {"instance": config["instance"], "pid": os.getpid(), **models.status()}

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


def _watch_clients(config: dict[str, Any], stop: threading.Event, server_box: list[Any]) -> None:
    """Stop the server once no client process has been alive for ``linger_s`` seconds."""
    clients_dir = Path(config["clients_dir"])
    linger = float(config["linger_s"])
    idle_since: float | None = None
    while not stop.is_set():
        if live_clients(clients_dir, prune=True):
            idle_since = None
        else:
            now = time.monotonic()
            idle_since = now if idle_since is None else idle_since
            if now - idle_since >= linger:
                print("no live client left; shutting down", file=sys.stderr, flush=True)
                stop.set()
                if server_box:
                    server_box[0].should_exit = True
                return
        stop.wait(1.0)


def _load_sibling(name: str) -> Any:
    """A module next to this file, loaded by path: this process cannot import autobots."""
    import importlib.util

    path = Path(__file__).resolve().with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_autobots_embedded_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="autobots managed llama.cpp server")
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text(encoding="utf-8"))

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]

    stop = threading.Event()
    server_box: list[Any] = []
    watchdog = threading.Thread(
        target=_watch_clients, args=(config, stop, server_box), name="client-watchdog", daemon=True
    )
    watchdog.start()

    threads = _load_sibling("_threads")
    # Before anything loads llama.cpp: OpenMP reads its wait policy once, when it is loaded.
    threads.configure_process(config["models"][0]["thread_policy"])

    import uvicorn

    models = ResidentModels(config["models"], threads)
    try:
        for alias in config["preload"]:
            models.load(alias)
        app = build_app(config, models)
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        )
        server_box.append(server)
        if stop.is_set():
            return 0
        # Written only once the models are loaded, so the port file doubles as "loaded".
        _write_json_atomic(
            Path(config["port_file"]),
            {"port": port, "pid": os.getpid(), "instance": config["instance"]},
        )
        server.run(sockets=[sock])
    finally:
        stop.set()
        models.close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
