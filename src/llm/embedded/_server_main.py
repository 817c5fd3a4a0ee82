"""The managed local model server process: llama_cpp.server's OpenAI API plus what autobots needs.

It is started by ``autobots.llm.embedded.server`` as ``python <this file> --config FILE``,
by path and not as ``-m autobots...``, so it works whichever way the parent found the
``autobots`` package; it therefore imports nothing from autobots.  Its sibling modules are
imported as the private package ``_autobots_embedded`` (this directory, without running the
parent's ``__init__``), so they import each other relatively in both processes.  One job each:

* ``_protocol``: routes, headers, files and process identity the parent shares (the only one
  the parent imports);
* ``_http``: the FastAPI app (chat streamed, whole or with tools; cancel; health; queue);
* ``_models``: the resident models and their loading; ``_llama``: the metered ``Llama``;
* ``_queue``: the queue and wait estimates; ``_loading``: load progress and measured load times;
* ``_threads``: llama.cpp's thread count; ``_tool_calls``: OpenAI tools on the model's template;
* this file: arguments, start-up (the port, the first model), the client watchdog.

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
   ``_threads`` module next to this file chooses the count before each
   evaluation), and ``/autobots/health`` reports the count llama.cpp holds.
13. The stock server answers OpenAI ``tools`` with plain text; here a request that offers tools
   gets ``tool_calls`` (the ``_tool_calls`` module next to this file: the model's own template
   and its ``<tool_call>`` blocks), streamed or not.
14. The stock server says nothing about its queue.  Here it listens before its first model is
   loaded, and ``/autobots/queue?tag=`` tells a caller how many requests are ahead of its own,
   whether the model is still loading, and about how long until its reply starts (``_queue``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import sys
import threading
import time
import traceback
import types
from pathlib import Path
from typing import Any

PACKAGE = "_autobots_embedded"


def _package() -> str:
    """The package this module's siblings are imported from.

    Imported by the parent (tests do), it is the real package; run as a script, this directory
    becomes the package ``PACKAGE`` without its ``__init__`` (which belongs to the parent and
    would import pydantic settings and the weights code the server has no use for).
    """
    if __package__:
        return __package__
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(Path(__file__).resolve().parent)]
        sys.modules[PACKAGE] = package
    return PACKAGE


def _sibling(name: str) -> Any:
    return importlib.import_module(f"{_package()}.{name}")


def _watch_clients(config: dict[str, Any], stop: threading.Event, server_box: list[Any]) -> None:
    """Stop the server once no client process has been alive for ``linger_s`` seconds."""
    protocol = _sibling("_protocol")
    clients_dir = Path(config["clients_dir"])
    linger = float(config["linger_s"])
    idle_since: float | None = None
    while not stop.is_set():
        if protocol.live_clients(clients_dir, prune=True):
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


def _preload(config: dict[str, Any], models: Any, server: Any, failed: list[BaseException]) -> None:
    """Load the first models while the server already answers health and queue questions; the
    port file says ``loaded`` only after, which is what the parent waits for.  A failure stops
    the server (the parent shows its log)."""
    protocol = _sibling("_protocol")
    port_file = Path(config["port_file"])
    try:
        for alias in config["preload"]:
            models.load(alias)
        info = protocol.read_json(port_file) or {}
        protocol.write_json_atomic(port_file, {**info, "loaded": True})
    except BaseException as exc:
        traceback.print_exc()
        failed.append(exc)
        server.should_exit = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="autobots managed llama.cpp server")
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text(encoding="utf-8"))
    protocol = _sibling("_protocol")

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

    threads = _sibling("_threads")
    # Before anything loads llama.cpp: OpenMP reads its wait policy once, when it is loaded.
    threads.configure_process(config["models"][0]["thread_policy"])

    import uvicorn

    loading = _sibling("_loading")
    loads = loading.LoadTracker(
        Path(config["timings_file"]), {m["alias"]: int(m["size"]) for m in config["models"]}
    )
    models = _sibling("_models").ResidentModels(config["models"], threads, loads)
    queue = _sibling("_queue").QueueTracker(loads)
    failed: list[BaseException] = []
    try:
        app = _sibling("_http").build_app(config, models, queue)
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        )
        server_box.append(server)
        if stop.is_set():
            return 0
        protocol.write_json_atomic(
            Path(config["port_file"]),
            {"port": port, "pid": os.getpid(), "instance": config["instance"], "loaded": False},
        )
        preload = threading.Thread(
            target=_preload, args=(config, models, server, failed), name="preload", daemon=True
        )
        preload.start()
        server.run(sockets=[sock])
    finally:
        stop.set()
        models.close()
        sock.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
