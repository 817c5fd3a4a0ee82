"""What every repository shares: its sessions, and one writer at a time on SQLite.

Each repository method is one short transaction (`_tx` to read, `_write` to change): no database
connection is ever held while agents talk to an LLM. The run path's statements, plain Core ones,
use `_read`/`_change` instead: a connection's transaction without an ORM session around it
costs a fifth of the CPU (about 0.15 ms against 0.75 ms a transaction on SQLite). Repositories of one database share one
write lock, so SQLite sees one writer from this process whichever repository writes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, CursorResult, Engine
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker

WriteLock = AbstractContextManager[object]


def rowcount(result: Any) -> int:
    """The rows an UPDATE or DELETE matched (`execute` is typed as any Result; these give a
    CursorResult): a conditional write's verdict."""
    return int(cast("CursorResult[Any]", result).rowcount)


S = TypeVar("S", bound="Store")


class Store:
    def __init__(self, factory: sessionmaker[OrmSession], serialize_writes: bool = True) -> None:
        self._factory = factory
        # One writer at a time in this process (SQLite). SQLite allows one writer anyway, and a
        # writer that finds the database locked sleeps in steps of up to 100 ms before retrying:
        # under a hundred concurrent runs, queueing here is far faster than SQLite's back-off.
        self._write_lock: WriteLock = threading.Lock() if serialize_writes else contextlib.nullcontext(None)

    @classmethod
    def alongside(cls: type[S], other: Store) -> S:
        """A repository of this kind on `other`'s database, sharing its write lock."""
        repo = cls.__new__(cls)
        repo._factory, repo._write_lock = other._factory, other._write_lock
        return repo

    @contextmanager
    def _tx(self) -> Iterator[OrmSession]:
        with self._factory.begin() as db:
            yield db

    @contextmanager
    def _write(self) -> Iterator[OrmSession]:
        with self._write_lock, self._factory.begin() as db:
            yield db

    @property
    def _engine(self) -> Engine:
        bind = self._factory.kw["bind"]
        assert isinstance(bind, Engine)
        return bind

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A Core connection's transaction, to read (no ORM session)."""
        with self._engine.begin() as conn:
            yield conn

    @contextmanager
    def _change(self) -> Iterator[Connection]:
        """A Core connection's transaction, to write (the write lock held, as `_write`)."""
        with self._write_lock, self._engine.begin() as conn:
            yield conn
