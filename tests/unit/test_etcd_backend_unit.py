"""The etcd backend's rules on a fake adapter: what a write compares, and how a
write whose answer was lost is answered on retry (from its retry key in etcd)."""

from __future__ import annotations

import json

import pytest
from flowd_client.errors import UnavailableError

from flowd.backend import StaleMirror
from flowd.etcd_backend import EtcdBackend
from flowd.etcd_types import Compare, KeyValue, OpResult, TxnResult
from flowd.store import Store


class FakeAdapter:
    def __init__(self) -> None:
        self.txns: list[tuple] = []
        self.answer: object = TxnResult(True, 50)
        self.kvs: dict[bytes, KeyValue] = {}
        self.endpoint = "http://fake:2379"

    def txn(self, compares, success, failure):
        self.txns.append((compares, success, failure))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def get(self, key):
        return self.kvs.get(key), 60

    def grant_lease(self, ttl):
        return type("L", (), {"id": 7, "ttl": ttl})()


def backend() -> tuple[EtcdBackend, FakeAdapter, Store]:
    b = EtcdBackend(("http://fake:2379",), "/flowd/u")
    fake = FakeAdapter()
    b._adapter = fake  # type: ignore[assignment]
    store = Store()
    store.apply_record({"rev": 10, "ts": "", "current": "a", "changes": [
        ["add_flow", "a", {"id": "a", "name": "a", "revision": 10}],
        ["add_flow", "b", {"id": "b", "name": "b", "revision": 10}]]}, gapped=True)
    b.store = store
    return b, fake, store


def test_an_update_compares_the_flow_it_read_and_not_the_whole_store() -> None:
    b, fake, _ = backend()
    rec = {"rev": 11, "ts": "", "current": "a", "changes": [["update_flow", "b", {"id": "b"}]]}
    revs, _written = b.durable([rec], 10)
    assert revs == [50]
    compares = fake.txns[0][0]
    assert compares == [Compare.mod_revision(b.layout.flow_key("b"), 10)]


def test_deleting_the_current_flow_also_compares_the_marker() -> None:
    b, fake, _ = backend()
    rec = {"rev": 11, "ts": "", "current": "b", "changes": [["delete_flow", "a", None]]}
    b.durable([rec], 10)
    assert Compare.mod_revision(b.layout.marker, 10) in fake.txns[0][0]


def test_a_refused_compare_is_a_stale_mirror_to_catch_up_to() -> None:
    b, fake, _ = backend()
    marker = KeyValue(b.layout.marker, b"{}", 3, 44, 9)
    fake.answer = TxnResult(False, 44, (OpResult(kvs=(marker,)),))
    rec = {"rev": 11, "ts": "", "current": "a", "changes": [["update_flow", "b", {"id": "b"}]]}
    with pytest.raises(StaleMirror) as got:
        b.durable([rec], 10)
    assert got.value.revision == 44


def test_a_write_whose_answer_was_lost_is_answered_from_its_retry_key() -> None:
    b, fake, _ = backend()
    key = ("client-1", 5)
    fake.answer = UnavailableError("lost", {"maybe_applied": True})
    flow = {"id": "c", "name": "c", "revision": 11}
    rec = {"rev": 11, "ts": "", "current": "c", "changes": [["add_flow", "c", flow]],
           "keys": [[list(key), flow]]}
    with pytest.raises(UnavailableError):
        b.durable([rec], 10)
    assert b.unavailable_since is not None
    assert b.lookup(key) is None  # it did not land after all: the retry writes it
    stored = {"stage": 11, "result": flow}
    fake.kvs[b.layout.retry_key(key)] = KeyValue(b.layout.retry_key(key),
                                                 json.dumps(stored).encode(), 57, 57, 1)
    assert b.lookup(key) == (True, {**flow, "revision": 57}, 57)
    assert b.lookup(("client-2", 1)) is None  # a key never in doubt costs no etcd read
