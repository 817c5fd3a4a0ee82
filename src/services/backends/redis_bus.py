"""The distributed mode's Redis backends: events, stops and human input between processes.

- Events: each run's stored events are appended (after their commit, by the event writer) to the
  stream `<prefix>run:<id>:events` with the ids `0-<seq>`: the stream's ids are the run's own
  event numbers, so one `Last-Event-ID` works on the stream, on the database and in both modes.
  A listener reads the stream while it holds the run from its first event; once it has expired
  (`runs.stream_ttl_s` after the run ended) or lost its start (Redis restarted mid-run), the
  database, which has every event the stream has, serves it instead. A stream that missed an
  event (a publish that failed) is deleted and not written again, so no listener reads a hole. One thread per process
  blocks on all the streams its listeners watch and wakes them.
- Stops: a cancel sets `<prefix>run:<id>:stop` and publishes the run's id on the channel
  `<prefix>stops`, which every worker subscribes to (a fan-out, not a shared queue: each worker
  hears every stop and acts on the runs it holds). The key covers a worker that claims the run
  just after the message went by.
- Input: the answer to prompt P is pushed to the list `<prefix>run:<id>:input:<P>`, on which the
  run's thread blocks; the database decided beforehand that this answer is the one.

Redis going away never ends a run: events are in the database already, listeners fall back to
it, and the threads here reconnect.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from ...schemas.runs import TERMINAL, EventKind
from ...storage.repository import Repository
from .base import Event, EventFeed, EventLog, InputBroker, StopSignal

log = logging.getLogger(__name__)

PREFIX = "autobots:"
LIVE_STREAM_TTL_S = 86_400  # a stream whose run never ends (its worker died) goes eventually
INPUT_TTL_S = 600
STOP_TTL_S = 3600
BLOCK_MS = 250
RECONNECT_S = 0.5
MISSING_POLL_S = 1.0  # how often listeners of a stream that is gone look at the database


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)


def _stream(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:events"


def _seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[1])


def _is_end(kind: str, data: dict[str, Any]) -> bool:
    return kind == EventKind.STATUS and data.get("status") in TERMINAL


class RedisEvents(EventLog):
    def __init__(self, client: redis.Redis, repo: Repository, stream_ttl_s: int) -> None:
        self._redis = client
        self._repo = repo
        self._ttl = stream_ttl_s
        self._watcher = _StreamWatcher(client)
        self._failing = False
        # Runs whose stream missed an event (a failed publish): it is deleted and never written
        # again, so their listeners read the database, which has every event, instead of a
        # stream with a hole in it.
        self._lock = threading.Lock()
        self._broken: set[str] = set()
        self._to_delete: set[str] = set()

    def published(self, events: list[tuple[str, int, str, dict[str, Any]]]) -> None:
        if not events:
            return
        with self._lock:
            broken, to_delete = set(self._broken), set(self._to_delete)
        pipe = self._redis.pipeline(transaction=False)
        for run_id in to_delete:
            pipe.delete(_stream(run_id))
        sent: list[str] = []
        for run_id, seq, kind, data in events:
            if run_id in broken:
                continue
            key = _stream(run_id)
            pipe.xadd(key, {"k": kind, "d": json.dumps(data, separators=(",", ":"))}, id=f"0-{seq}")
            pipe.expire(key, self._ttl if _is_end(kind, data) else LIVE_STREAM_TTL_S)
            sent.append(run_id)
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("events not published to Redis (listeners read the database): %s", exc)
            self._failing = True
            self._break(set(sent))
            return
        self._failing = False
        failed = set()
        for i, result in enumerate(results[len(to_delete) :]):
            # An id at or below the stream's last one: published already (a replay); harmless.
            if isinstance(result, Exception) and "equal or smaller" not in str(result):
                log.warning("an event was not published to Redis: %s", result)
                failed.add(sent[i // 2])
        with self._lock:
            self._to_delete -= to_delete
        self._break(failed)

    def _break(self, run_ids: set[str]) -> None:
        with self._lock:
            fresh = run_ids - self._broken
            self._broken |= fresh
            self._to_delete |= fresh
            if len(self._broken) > 10_000:  # long-ended runs: their streams are gone anyway
                self._broken = set(list(self._broken)[-5_000:])

    def feed(self, run_id: str) -> EventFeed:
        return RedisFeed(self._redis, self._repo, run_id, self._watcher)

    def close(self) -> None:
        self._watcher.close()


class RedisFeed(EventFeed):
    def __init__(self, client: redis.Redis, repo: Repository, run_id: str, watcher: _StreamWatcher) -> None:
        self._redis = client
        self._repo = repo
        self._run_id = run_id
        self._watcher = watcher

    def take(self, after: int) -> tuple[list[Event], bool]:
        key = _stream(self._run_id)
        try:
            pipe = self._redis.pipeline(transaction=True)  # one consistent view of the stream
            pipe.xrange(key, min="0-1", max="0-1", count=1)
            pipe.xrange(key, min=f"(0-{after}", count=1000)
            pipe.xrevrange(key, count=1)
            whole, fresh, last = pipe.execute()
        except redis.RedisError:
            return self._from_database(after)
        if not whole or not last:  # expired, never published, or lost its start: the database has it all
            return self._from_database(after)
        events = [(_seq(i), f[b"k"].decode(), json.loads(f[b"d"])) for i, f in fresh]
        _, fields = last[0]
        ended = _is_end(fields[b"k"].decode(), json.loads(fields[b"d"]))
        if ended and events and _seq(last[0][0]) != events[-1][0]:
            ended = False  # more than one page to go
        return events, ended

    def _from_database(self, after: int) -> tuple[list[Event], bool]:
        events = self._repo.events_after(self._run_id, after, limit=1000)
        if events:
            return events, len(events) < 1000 and _is_end(events[-1][1], events[-1][2])
        last = self._repo.events_after(self._run_id, max(0, after - 1), limit=1)
        if last and _is_end(last[0][1], last[0][2]):
            return [], True
        run = self._repo.get_run(self._run_id)
        # A run gone, or one that ended without a stored end (written before events existed).
        return [], run is None or (run["status"] in TERMINAL and not self._repo.last_event_seq(self._run_id))

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        return self._watcher.watch(_stream(self._run_id), wake)


class _StreamWatcher:
    """One thread per process blocking on every watched stream (XREAD), waking its listeners."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._lock = threading.Lock()
        self._watched: dict[str, tuple[str, set[Callable[[], None]]]] = {}
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def watch(self, key: str, wake: Callable[[], None]) -> Callable[[], None]:
        try:  # from the stream's end now: what is there already, the listener reads itself
            last: Any = self._redis.xrevrange(key, count=1)
            start = last[0][0].decode() if last else "0-0"
        except redis.RedisError:
            start = "0-0"
        with self._lock:
            held = self._watched.get(key)
            if held is None:
                self._watched[key] = (start, {wake})
            else:
                held[1].add(wake)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="event-streams", daemon=True)
                self._thread.start()

        def unwatch() -> None:
            with self._lock:
                held = self._watched.get(key)
                if held is not None:
                    held[1].discard(wake)
                    if not held[1]:
                        del self._watched[key]

        return unwatch

    def close(self) -> None:
        self._closed.set()

    def _loop(self) -> None:
        next_check = time.monotonic() + MISSING_POLL_S
        while not self._closed.is_set():
            with self._lock:
                streams = {k: v[0] for k, v in self._watched.items()}
            if not streams:
                time.sleep(BLOCK_MS / 1000)
                continue
            try:
                found: Any = self._redis.xread(streams, block=BLOCK_MS, count=100)  # type: ignore[arg-type]
            except redis.RedisError:
                self._wake(list(streams))  # they read the database until Redis is back
                time.sleep(RECONNECT_S)
                continue
            woken = []
            with self._lock:
                for key, entries in found or []:
                    name = key.decode() if isinstance(key, bytes) else key
                    held = self._watched.get(name)
                    if held is not None and entries:
                        self._watched[name] = (entries[-1][0].decode(), held[1])
                        woken.append(name)
            if time.monotonic() >= next_check:  # streams that are gone: their listeners poll
                next_check = time.monotonic() + MISSING_POLL_S
                woken += self._missing(list(streams))
            self._wake(woken)

    def _missing(self, keys: list[str]) -> list[str]:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.exists(key)
            return [k for k, there in zip(keys, pipe.execute(), strict=True) if not there]
        except redis.RedisError:
            return keys

    def _wake(self, keys: list[str]) -> None:
        with self._lock:
            wakes = [w for k in keys if k in self._watched for w in self._watched[k][1]]
        for wake in wakes:
            wake()


class RedisStops(StopSignal):
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._closed = threading.Event()

    def request(self, run_id: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(f"{PREFIX}run:{run_id}:stop", "1", ex=STOP_TTL_S)
        pipe.publish(f"{PREFIX}stops", run_id)
        pipe.execute()

    def requested(self, run_id: str) -> bool:
        try:
            return bool(self._redis.exists(f"{PREFIX}run:{run_id}:stop"))
        except redis.RedisError:
            return False

    def listen(self, on_stop: Callable[[str], None]) -> None:
        threading.Thread(target=self._loop, args=(on_stop,), name="stops", daemon=True).start()

    def _loop(self, on_stop: Callable[[str], None]) -> None:
        while not self._closed.is_set():
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(f"{PREFIX}stops")
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        run_id = message["data"]
                        on_stop(run_id.decode() if isinstance(run_id, bytes) else str(run_id))
            except redis.RedisError as exc:
                log.warning("listening for stops: %s; reconnecting", exc)
                time.sleep(RECONNECT_S)
            except Exception:
                log.exception("a stop could not be handled")

    def close(self) -> None:
        self._closed.set()


class RedisInputs(InputBroker):
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def deliver(self, run_id: str, prompt_id: str, text: str) -> None:
        key = f"{PREFIX}run:{run_id}:input:{prompt_id}"
        pipe = self._redis.pipeline(transaction=False)
        pipe.rpush(key, text)
        pipe.expire(key, INPUT_TTL_S)
        pipe.execute()

    def wait(self, run_id: str, prompt_id: str, timeout_s: float, stopping: Callable[[], bool]) -> str | None:
        key = f"{PREFIX}run:{run_id}:input:{prompt_id}"
        deadline = time.monotonic() + timeout_s
        while not stopping():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                got = self._redis.blpop([key], timeout=min(0.5, max(0.01, remaining)))
            except redis.RedisError:
                time.sleep(RECONNECT_S)
                continue
            if got is not None:
                value = got[1]
                return value.decode() if isinstance(value, bytes) else str(value)
        return None
