"""Property-based: random operations from three clients against a plain in-memory model.

The model below is written from the seed's rules and issue 4 (not from flowd's code): a
dict of flows in creation order, the current id, the store revision, CAS, plan ops and
all-or-nothing batches. After every step the daemon's reply (or error) must be the
model's, the store revision must match, and at the end of each example the whole store
must match. One daemon serves the whole run; each example starts by deleting every flow.
Two clients are plain, the third is cached (its reads first wait for the model's
revision, as read-your-writes guarantees for its own writes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon
from flowd_client import (
    ConflictError,
    Flow,
    FlowClient,
    FlowdError,
    NotFoundError,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

ID = re.compile(r"^flow_[0-9a-f]{8}$")
MISSING = "flow_00000000"

# ------------------------------------------------------------------ the model


@dataclass(frozen=True)
class MFlow:
    name: str
    plans: tuple[Any, ...]
    revision: int


@dataclass
class Model:
    flows: dict[str, MFlow] = field(default_factory=dict)
    current: str | None = None
    revision: int = 0

    def copy(self) -> Model:
        return Model(dict(self.flows), self.current, self.revision)


class Txn:
    """One write (or one batch) against a copy of the model, under the next revision."""

    def __init__(self, model: Model) -> None:
        self.m = model.copy()
        self.rev = model.revision + 1
        self.changed = False

    def _set(self, fid: str, flow: MFlow) -> MFlow:
        self.m.flows[fid] = flow
        self.changed = True
        return flow

    def require(self, fid: str, if_revision: int | None) -> MFlow:
        flow = self.m.flows.get(fid)
        if flow is None:
            raise NotFoundError(fid)
        if if_revision is not None and flow.revision != if_revision:
            raise ConflictError(fid, {"current_revision": flow.revision})
        return flow

    def add_flow(self, fid: str, name: str, plans: list[Any] | None = None) -> str:
        self._set(fid, MFlow(name, tuple(plans or ()), self.rev))
        self.m.current = fid
        return fid

    def update_flow(self, flow_id: str, name: str | None = None,
                    plans: list[Any] | None = None, if_revision: int | None = None) -> MFlow:
        f = self.require(flow_id, if_revision)
        return self._set(flow_id, MFlow(f.name if name is None else name,
                                        f.plans if plans is None else tuple(plans), self.rev))

    def delete_flow(self, flow_id: str, if_revision: int | None = None) -> bool:
        if flow_id not in self.m.flows:
            if if_revision is not None:
                raise ConflictError(flow_id, {"current_revision": None})
            return False
        self.require(flow_id, if_revision)
        del self.m.flows[flow_id]
        self.changed = True
        if self.m.current == flow_id:
            self.m.current = next(iter(self.m.flows), None)  # first remaining
        return True

    def set_current(self, flow_id: str) -> bool:
        if flow_id not in self.m.flows:
            return False
        self.m.current, self.changed = flow_id, True
        return True

    def append_plan(self, flow_id: str, plan: dict[str, Any],
                    if_revision: int | None = None) -> MFlow:
        f = self.require(flow_id, if_revision)
        return self._set(flow_id, replace(f, plans=(*f.plans, plan), revision=self.rev))

    def _index(self, f: MFlow, index: int) -> int:
        if not -len(f.plans) <= index < len(f.plans):
            raise NotFoundError(f"index {index}")
        return index % len(f.plans)

    def remove_plan(self, flow_id: str, index: int) -> MFlow:
        f = self.require(flow_id, None)
        i = self._index(f, index)
        return self._set(flow_id, replace(f, plans=f.plans[:i] + f.plans[i + 1:],
                                          revision=self.rev))

    def move_plan(self, flow_id: str, src: int, dst: int) -> MFlow:
        f = self.require(flow_id, None)
        plans = list(f.plans)
        s, d = self._index(f, src), self._index(f, dst)
        plans.insert(d, plans.pop(s))
        return self._set(flow_id, replace(f, plans=tuple(plans), revision=self.rev))

    def check(self, flow_id: str, revision: int | None) -> bool:
        f = self.m.flows.get(flow_id)
        actual = None if f is None else f.revision
        if actual != revision:
            raise ConflictError(flow_id, {"current_revision": actual})
        return True

    def batch(self, ops: list[dict[str, Any]], new_ids: list[str]) -> list[Any]:
        out = []
        for i, item in enumerate(ops):
            args = dict(item["args"])
            try:
                if item["op"] == "add_flow":
                    args["fid"] = new_ids[i]
                out.append(getattr(self, item["op"])(**args))
            except (ConflictError, NotFoundError) as exc:
                exc.data["index"] = i
                raise
        return out

    def commit(self, model: Model) -> None:
        if self.changed:
            model.flows, model.current, model.revision = self.m.flows, self.m.current, self.rev


def model_write(model: Model, apply: Callable[[Txn], Any]) -> tuple[Any, FlowdError | None]:
    txn = Txn(model)
    try:
        result = apply(txn)
    except FlowdError as exc:
        return None, exc
    txn.commit(model)
    return result, None


# ------------------------------------------------------------------ comparing


def same_flow(fid: str, got: Flow | dict[str, Any] | None, want: MFlow | None) -> bool:
    if got is None or want is None:
        return got is None and want is None
    if isinstance(got, dict):
        got = Flow.from_wire(got)
    return (got.id, got.name, tuple(got.plans), got.revision) == (
        fid, want.name, want.plans, want.revision)


def same_error(got: FlowdError, want: FlowdError) -> bool:
    if type(got) is not type(want):
        return False
    if isinstance(want, ConflictError) and got.current_revision != want.current_revision:
        return False
    return got.data.get("index") == want.data.get("index")


# ------------------------------------------------------------------ the machine

NAMES = st.sampled_from(["a", "b", "", "프로젝트 A"])
VALUES = st.one_of(st.integers(-3, 3), st.text(max_size=3), st.booleans(), st.none())
PLAN = st.dictionaries(st.sampled_from(["id", "t", "n"]), VALUES, max_size=2)
PLANS = st.lists(PLAN, max_size=3)
CLIENT = st.integers(0, 2)


class Service:
    """The daemon and three clients for the whole run."""

    def __init__(self, data_dir: Path) -> None:
        self.daemon = Daemon(data_dir).start()
        self.clients = [FlowClient(data_dir), FlowClient(data_dir),
                        FlowClient(data_dir, cache=True)]

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.daemon.stop()


class StoreMachine(RuleBasedStateMachine):
    service: Service

    def __init__(self) -> None:
        super().__init__()
        self.clients = self.service.clients
        plain = self.clients[0]
        ids = list(plain.get_all_flows())
        for start in range(0, len(ids), 1000):
            plain.commit_batch([{"op": "delete_flow", "args": {"flow_id": f}}
                                for f in ids[start:start + 1000]])
        self.model = Model(revision=plain.ping()["revision"])
        self.deleted: list[str] = []

    # ---------------------------------------------------------------- helpers

    def reader(self, i: int) -> FlowClient:
        c = self.clients[i]
        if c._mirror is not None:
            c._mirror.wait_for(self.model.revision, 10.0)
        return c

    def target(self, data: st.DataObject) -> str:
        # mostly existing flows; sometimes an unknown or a deleted id
        return data.draw(st.sampled_from([*self.model.flows] * 4 + [MISSING, *self.deleted[-1:]]),
                         label="target")

    def cas(self, data: st.DataObject, fid: str) -> int | None:
        flow = self.model.flows.get(fid)
        right = flow.revision if flow else 1
        return data.draw(st.sampled_from([None, right, right + 1, max(0, right - 1)]),
                         label="if_revision")

    def compare(self, call: Callable[[], Any], apply: Callable[[Txn], Any],
                same: Callable[[Any, Any], bool]) -> Any:
        before = self.model.copy()
        want, want_err = model_write(self.model, apply)
        try:
            got = call()
        except FlowdError as exc:
            assert want_err is not None, f"daemon refused what the model accepts: {exc!r}"
            assert same_error(exc, want_err), (exc, exc.data, want_err, want_err.data)
            return None
        assert want_err is None, f"daemon accepted what the model refuses: {want_err!r}"
        assert same(got, want), (got, want, before)
        return got

    # ---------------------------------------------------------------- writes

    @initialize(c=CLIENT, names=st.lists(NAMES, min_size=2, max_size=5))
    def some_flows(self, c: int, names: list[str]) -> None:
        for name in names:
            self.add_flow(c, name, [])

    @rule(c=CLIENT, name=NAMES, plans=PLANS)
    def add_flow(self, c: int, name: str, plans: list[Any]) -> None:
        fid = self.clients[c].add_flow(name, plans)
        assert ID.match(fid) and fid not in self.model.flows
        self.compare(lambda: fid, lambda t: t.add_flow(fid, name, plans), lambda g, w: g == w)

    @rule(c=CLIENT, data=st.data(), name=st.none() | NAMES, plans=st.none() | PLANS)
    def update_flow(self, c: int, data: st.DataObject, name: str | None,
                    plans: list[Any] | None) -> None:
        fid = self.target(data)
        rev = self.cas(data, fid)
        self.compare(
            lambda: self.clients[c].update_flow(fid, name=name, plans=plans, if_revision=rev),
            lambda t: t.update_flow(fid, name, plans, rev),
            lambda g, w: same_flow(fid, g, w))

    @rule(c=CLIENT, data=st.data())
    def delete_flow(self, c: int, data: st.DataObject) -> None:
        fid = self.target(data)
        rev = self.cas(data, fid)
        if self.compare(lambda: self.clients[c].delete_flow(fid, if_revision=rev),
                        lambda t: t.delete_flow(fid, rev), lambda g, w: g is w):
            self.deleted.append(fid)

    @rule(c=CLIENT, data=st.data())
    def set_current(self, c: int, data: st.DataObject) -> None:
        fid = self.target(data)
        self.compare(lambda: self.clients[c].set_current(fid), lambda t: t.set_current(fid),
                     lambda g, w: g is w)

    @rule(c=CLIENT, data=st.data(), plan=PLAN)
    def append_plan(self, c: int, data: st.DataObject, plan: dict[str, Any]) -> None:
        fid = self.target(data)
        rev = self.cas(data, fid)
        self.compare(lambda: self.clients[c].append_plan(fid, plan, if_revision=rev),
                     lambda t: t.append_plan(fid, plan, rev), lambda g, w: same_flow(fid, g, w))

    @rule(c=CLIENT, data=st.data(), index=st.integers(-3, 3))
    def remove_plan(self, c: int, data: st.DataObject, index: int) -> None:
        fid = self.target(data)
        self.compare(lambda: self.clients[c].remove_plan(fid, index=index),
                     lambda t: t.remove_plan(fid, index), lambda g, w: same_flow(fid, g, w))

    @rule(c=CLIENT, data=st.data(), src=st.integers(-2, 2), dst=st.integers(-2, 2))
    def move_plan(self, c: int, data: st.DataObject, src: int, dst: int) -> None:
        fid = self.target(data)
        self.compare(lambda: self.clients[c].move_plan(fid, src, dst),
                     lambda t: t.move_plan(fid, src, dst), lambda g, w: same_flow(fid, g, w))

    def sub_op(self, data: st.DataObject) -> dict[str, Any]:
        kind = data.draw(st.sampled_from(["add_flow", "update_flow", "delete_flow",
                                          "set_current", "append_plan", "check"]), label="op")
        if kind == "add_flow":
            return {"op": kind, "args": {"name": data.draw(NAMES)}}
        fid = self.target(data)
        args: dict[str, Any] = {"flow_id": fid}
        if kind == "update_flow":
            args["name"] = data.draw(NAMES)
        elif kind == "append_plan":
            args["plan"] = data.draw(PLAN)
        elif kind == "check":
            args["revision"] = self.cas(data, fid)
        if kind in ("update_flow", "delete_flow", "append_plan"):
            rev = self.cas(data, fid)
            if rev is not None:
                args["if_revision"] = rev
        return {"op": kind, "args": args}

    @rule(c=CLIENT, data=st.data(), n=st.integers(1, 4))
    def batch(self, c: int, data: st.DataObject, n: int) -> None:
        ops = [self.sub_op(data) for _ in range(n)]
        placeholders = [f"new{i}" for i in range(n)]
        _, predicted = model_write(self.model.copy(), lambda t: t.batch(ops, placeholders))
        try:
            results = self.clients[c].commit_batch(ops)
        except FlowdError as exc:
            assert predicted is not None, f"daemon refused a batch the model accepts: {exc!r}"
            assert same_error(exc, predicted), (exc, exc.data, predicted.data, ops)
            return
        assert predicted is None, f"daemon accepted a batch the model refuses: {predicted!r}"
        want, err = model_write(self.model, lambda t: t.batch(ops, results))
        assert err is None and len(results) == len(want) == n
        for op, got, w in zip(ops, results, want, strict=True):
            if op["op"] in ("update_flow", "append_plan"):
                assert same_flow(op["args"]["flow_id"], got, w), (got, w)
            else:
                assert got == w, (op, got, w)
        self.deleted += [o["args"]["flow_id"] for o, r in zip(ops, results, strict=True)
                         if o["op"] == "delete_flow" and r is True]

    # ---------------------------------------------------------------- reads

    @rule(c=CLIENT, data=st.data())
    def get_flow(self, c: int, data: st.DataObject) -> None:
        fid = self.target(data)
        assert same_flow(fid, self.reader(c).get_flow_by_id(fid), self.model.flows.get(fid))

    @rule(c=CLIENT, name=NAMES)
    def find_by_name(self, c: int, name: str) -> None:
        got = {f.id for f in self.reader(c).find_by_name(name)}
        assert got == {fid for fid, f in self.model.flows.items() if f.name == name}

    @invariant()
    def same_revision_and_current(self) -> None:
        assert self.clients[0].ping()["revision"] == self.model.revision
        assert self.reader(2).current_flow_id == self.model.current

    def teardown(self) -> None:
        for i in range(3):
            flows = self.reader(i).get_all_flows()
            assert list(flows) == list(self.model.flows)  # creation order
            for fid, flow in flows.items():
                assert same_flow(fid, flow, self.model.flows[fid])
            assert self.reader(i).current_flow_id == self.model.current


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("model") / "data")
    yield svc
    svc.close()


def test_daemon_matches_the_model(service: Service) -> None:
    StoreMachine.service = service
    run_state_machine_as_test(StoreMachine, settings=settings(
        max_examples=50, stateful_step_count=40, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    assert service.clients[0].ping()["pong"] is True
