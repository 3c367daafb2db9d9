"""The seam between the request path and the store of record.

The request handler stages a group of writes as records (flowd.store's
physical changes) and hands them to a backend, which makes them durable and
says at which revision each one landed; only then does the handler apply
them to its store and answer. Two backends:

- :class:`LocalBackend`: the journal in the data dir, one append and one
  fsync per group; a record's revision is the one the Txn staged.
- ``flowd.etcd_backend.EtcdBackend``: one etcd transaction per write; the
  revision is etcd's. It is imported only with ``--backend etcd``, so the
  local backend never loads grpc or etcd3.

A backend raises OSError when nothing of the group was made durable (the
handler answers UNAVAILABLE), or a FlowdError that is the answer itself.
"""

from __future__ import annotations

from typing import Any, Protocol

from .storage.journal import Journal

Record = dict[str, Any]


class StaleMirror(OSError):
    """The write was computed on a store that lags the store of record: catch up
    (up to ``revision``) and compute it again. Nothing was written."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"the local mirror lags the store of record (revision {revision})")
        self.revision = revision


class Backend(Protocol):
    #: revisions are the backend's own (not store.revision + 1): events carry ``prev``
    gapped: bool
    #: each write is its own group (the store of record checks it, not this host)
    one_write_per_group: bool

    def durable(self, records: list[Record], base_revision: int,
                sync: bool | None = None) -> tuple[list[int], int]:
        """Make ``records`` durable, in order; their revisions and the bytes written.
        ``base_revision``: the store's revision the records were computed on."""
        ...

    def lookup(self, key: tuple[str, int]) -> tuple[bool, Any, int] | None:
        """The first reply of a retried write this host's memory does not hold."""
        ...

    def describe(self) -> dict[str, Any]:
        """What stats report about the store of record."""
        ...

    def before(self, revision: int) -> list[Record] | None:
        """Records of other writers that come before ``revision`` and are not applied
        yet (apply them first); None: do not apply this one, it will come that way."""
        ...


def make_backend(config: Any, journal: Journal) -> Backend:
    """The configured backend; etcd's module (and grpc) is imported only for it."""
    if config.backend != "etcd":
        return LocalBackend(journal)
    from .etcd_backend import EtcdBackend

    def text(path: Any) -> str | None:
        return None if path is None else str(path)
    return EtcdBackend(tuple(config.etcd_endpoints), config.etcd_prefix,
                       cacert=text(config.etcd_cacert), cert=text(config.etcd_cert),
                       key=text(config.etcd_key))


class LocalBackend:
    """Today's journal: one append, one fsync per group."""

    gapped = False
    one_write_per_group = False

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def durable(self, records: list[Record], base_revision: int,
                sync: bool | None = None) -> tuple[list[int], int]:
        written = self.journal.append(records, sync=sync)
        return [r["rev"] for r in records], written

    def lookup(self, key: tuple[str, int]) -> tuple[bool, Any, int] | None:
        return None  # the journal's keys are replayed into RetryKeys at start-up

    def describe(self) -> dict[str, Any]:
        return {"kind": "local"}

    def before(self, revision: int) -> list[Record] | None:
        return []  # this daemon is the only writer


def stamp_record(record: dict[str, Any], rev: int) -> None:
    """The revision the backend gave a record, on it and on the flows it wrote (the
    replies hold the same flow dicts)."""
    if rev != record["rev"]:
        record["rev"] = rev
        for _op, _fid, flow in record["changes"]:
            if flow is not None:
                flow["revision"] = rev
