"""What every repository shares: its sessions, and one writer at a time on SQLite.

Each repository method is one short transaction (`_tx` to read, `_write` to change): no database
connection is ever held while agents talk to an LLM. Repositories of one database share one
write lock, so SQLite sees one writer from this process whichever repository writes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker

WriteLock = AbstractContextManager[object]
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
