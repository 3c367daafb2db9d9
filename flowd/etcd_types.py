"""The values the etcd adapter takes and returns: plain data, no grpc.

They live apart from ``flowd/etcd_adapter/`` so that the etcd backend can
build transactions and read results (and tests can check them) without
importing grpc; the adapter stays the one module that talks to etcd.

Revisions are etcd's: one global counter per write transaction, every key of
a transaction written at the same revision. A key's ``mod_revision`` is the
revision of its last write, ``create_revision`` that of the write that created
it (since it last did not exist); 0 in a compare means "the key is absent".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CompareTarget = Literal["mod", "create", "version", "value"]
CompareOp = Literal["==", "!=", "<", ">"]
EventKind = Literal["put", "delete"]


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` such that ``[prefix, range_end)`` is every key starting with prefix.

    As etcd's own client computes it: bump the last byte below 0xff and cut
    what follows; a prefix of only 0xff bytes (or empty) runs to the end of
    the key space, which etcd spells ``b"\\0"``.
    """
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


@dataclass(frozen=True)
class Compare:
    """One condition of a transaction, checked by etcd at commit time.

    With ``range_end`` it must hold for every key in ``[key, range_end)``;
    etcd reads the whole range for it (O(keys) on the server), and a key
    deleted from the range is simply no longer there to compare, so a range
    compare cannot see deletions. An empty range compares as one absent key
    (revisions and version 0); a ``value`` compare on an absent key is false.
    """

    key: bytes
    target: CompareTarget
    op: CompareOp
    value: int | bytes
    range_end: bytes | None = None

    @classmethod
    def mod_revision(cls, key: bytes, revision: int) -> Compare:
        """``key`` was last written at ``revision`` (0: ``key`` does not exist)."""
        return cls(key, "mod", "==", revision)

    @classmethod
    def range_unchanged_since(cls, key: bytes, range_end: bytes, revision: int) -> Compare:
        """No key in ``[key, range_end)`` was put after ``revision`` (deletions unseen)."""
        return cls(key, "mod", "<", revision + 1, range_end)


@dataclass(frozen=True)
class Put:
    key: bytes
    value: bytes
    #: a lease id from grant_lease; the key goes when the lease expires
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: bytes
    range_end: bytes | None = None


@dataclass(frozen=True)
class Get:
    key: bytes
    range_end: bytes | None = None


TxnOp = Put | Delete | Get


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True)
class OpResult:
    """What one operation of the branch taken gave: a Get its keys, a Delete its count."""

    kvs: tuple[KeyValue, ...] = ()
    deleted: int = 0


@dataclass(frozen=True)
class TxnResult:
    #: every compare held, so the success branch ran
    succeeded: bool
    #: the revision the transaction committed at if it wrote, else the store's
    #: revision it was evaluated against
    revision: int
    #: one per operation of the branch that ran, in order
    results: tuple[OpResult, ...] = ()


@dataclass(frozen=True)
class RangeResult:
    #: the revision every page was read at: the state is that of one instant
    revision: int
    #: sorted by create_revision, then key (keys of one transaction share it)
    kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True)
class WatchEvent:
    """One change. A delete carries the key and the deletion's revision only:
    its ``create_revision``, ``version`` and ``value`` are 0 and empty."""

    kind: EventKind
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


@dataclass(frozen=True)
class WatchBatch:
    """One watch response: whole revisions, oldest first, never a revision split.

    ``revision`` is the store's revision when etcd sent it. On a progress
    batch (no events, ``progress`` true) it promises that every change up to
    it has been delivered; on a batch with events it promises nothing more
    than the events' own revisions (a catching-up watch sends older history
    under a newer header).
    """

    revision: int
    events: tuple[WatchEvent, ...] = field(default=())
    progress: bool = False


@dataclass(frozen=True)
class Lease:
    id: int
    #: seconds granted (etcd may raise a too-short TTL to its minimum)
    ttl: int
