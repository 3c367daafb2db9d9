"""The client API, written once for the sync and the async client.

Each public method is a generator that yields :class:`Call` objects and gets
back their results; :meth:`FlowAPI._drive` runs it (a plain loop in the sync
client, an ``await`` loop in the async one). So the request shapes, paging
and result conversion live here and nowhere else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, cast

import orjson

from .errors import InvalidArgumentError, ProtocolError
from .feed import Sequencer
from .gc_pause import gc_paused
from .model import Change, Flow, changes_of, flow_or_none
from .protocol import PAGE_JSON, PROTOCOL_VERSION
from .request_core import Call, Steps


class StoreRead(NamedTuple):
    """The whole store at one revision, as one paged read returned it."""

    flows: dict[str, Flow]
    current_flow_id: str | None
    revision: int


def store_steps() -> Steps:
    """Every flow, in creation order, with the current id and the revision: the daemon
    pages from one revision, so the pages agree with each other and with both. Pages
    come as JSON text (the daemon's lines, decoded here), or decoded by a daemon from
    before that form, which refuses the argument."""
    form: dict[str, Any] = {"json": True}
    try:
        page = yield Call("get_all_flows", form)
    except InvalidArgumentError:  # an older daemon: "unknown argument(s) ['json']"
        form = {}
        page = yield Call("get_all_flows", form)
    flows: dict[str, Flow] = {}
    while True:
        with gc_paused():
            for d in page_flows(page):
                flows[d["id"]] = Flow.from_wire(d)
        if page["next"] is None:
            return StoreRead(flows, page["current_flow_id"], page["revision"])
        page = yield Call("get_all_flows", {**form, "cursor": page["next"]})


def page_flows(page: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """The flows of one page of get_all_flows, as wire dicts, in order."""
    raw = page.get(PAGE_JSON)
    if raw is None:
        return cast("list[dict[str, Any]]", page["flows"])
    try:
        flows = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise ProtocolError(f"a page of flows is not JSON: {exc}") from None
    if type(flows) is not dict:
        raise ProtocolError("a page of flows is not a JSON object")
    return cast("dict[str, dict[str, Any]]", flows).values()


def catch_up_steps(seq: Sequencer) -> Steps:
    """Every change after ``seq.last`` from the daemon's history, in order (for followers)."""
    out: list[Change] = []
    while True:
        reply = yield Call("history", {"since": seq.last})
        changes = [c for event in reply["changes"] for c in changes_of(event)]
        out.extend(seq.accept_history(changes))
        if not changes or seq.last >= reply["revision"]:
            return out


def _args(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def api(fn: Callable[..., Steps] | None = None, *,
        local: Callable[..., Any] | None = None) -> Any:
    """Expose a generator of calls as a method whose driver the subclass picks.

    ``local(mirror, *args)`` answers from the cached client's mirror instead,
    with no generator and no round trip (the mirror's promise is a dict lookup).
    """
    def wrap(fn: Callable[..., Steps]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def method(self: FlowAPI, *args: Any, **kwargs: Any) -> Any:
            if local is not None and self._mirror is not None:
                return local(self._mirror, *args, **kwargs)
            return self._drive(fn(self, *args, **kwargs))
        return method
    return wrap(fn) if fn is not None else wrap


class FlowAPI:
    """The seed's API (get_all_flows ... save) plus what concurrent tools need."""

    _mirror: Any = None

    def _drive(self, steps: Steps) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------ seed API

    @api(local=lambda mirror: mirror.all_flows())
    def get_all_flows(self) -> Steps:
        """Every flow, in creation order (paged under the hood for huge stores)."""
        return (yield from store_steps()).flows

    @api(local=lambda mirror: mirror.read_store())
    def read_store(self) -> Steps:
        """Every flow, the current flow's id and the revision they are at, consistent with
        each other: a backup needs no ping before and after (a StoreRead)."""
        return (yield from store_steps())

    @api(local=lambda mirror, flow_id: mirror.get(flow_id))
    def get_flow_by_id(self, flow_id: str) -> Steps:
        return flow_or_none((yield Call("get_flow", {"flow_id": flow_id})))

    @api
    def add_flow(self, name: str, plans: list[dict[str, Any]] | None = None, *,
                 flow_id: str | None = None, extra: dict[str, Any] | None = None) -> Steps:
        """Create a flow and make it current; returns its id.

        ``flow_id`` (for restores) must be free, else ConflictError; ``extra``
        holds keys beyond the core ones, kept as they are.
        """
        args = _args(name=name, plans=plans, flow_id=flow_id, extra=extra)
        return (yield Call("add_flow", args))

    @api
    def delete_flow(self, flow_id: str, if_revision: int | None = None) -> Steps:
        """False if there is no such flow; the current flow moves to the first remaining."""
        return (yield Call("delete_flow", _args(flow_id=flow_id, if_revision=if_revision)))

    @api
    def set_current(self, flow_id: str) -> Steps:
        return (yield Call("set_current", {"flow_id": flow_id}))

    @api
    def save(self, force: bool = False) -> Steps:
        """Acknowledged writes are already durable; ``force`` rewrites flows.json now."""
        return (yield Call("save", {"force": bool(force)}))

    # ------------------------------------------------------------ more reads

    @api(local=lambda mirror: mirror.current())
    def get_current_flow_id(self) -> Steps:
        return (yield Call("get_current", {}))["current_flow_id"]

    @api(local=lambda mirror: mirror.get(mirror.current()))
    def get_current(self) -> Steps:
        return flow_or_none((yield Call("get_current", {}))["flow"])

    @api(local=lambda mirror, name: mirror.find_by_name(name))
    def find_by_name(self, name: str) -> Steps:
        return [Flow.from_wire(d) for d in (yield Call("find_by_name", {"name": name}))]

    @api
    def stats(self) -> Steps:
        return (yield Call("stats", {}))

    @api
    def ping(self) -> Steps:
        return (yield Call("ping", {}))

    @api
    def hello(self) -> Steps:
        return (yield Call("hello", {"version": PROTOCOL_VERSION, "client": "flowd_client"}))

    @api
    def history(self, since: int) -> Steps:
        """Changes after revision ``since`` still in the daemon's window (else CompactedError)."""
        reply = yield Call("history", {"since": since})
        return [c for event in reply["changes"] for c in changes_of(event)], reply["revision"]

    @api
    def catch_up(self, seq: Sequencer) -> Steps:
        """Every change after ``seq.last`` from the daemon's history, in order (for watchers)."""
        return (yield from catch_up_steps(seq))

    # ------------------------------------------------------------ more writes

    @api
    def update_flow(self, flow_id: str, *, name: str | None = None,
                    plans: list[dict[str, Any]] | None = None,
                    extra: dict[str, Any] | None = None,
                    if_revision: int | None = None) -> Steps:
        """ConflictError if ``if_revision`` is given and the flow moved on."""
        args = _args(flow_id=flow_id, name=name, plans=plans, extra=extra,
                     if_revision=if_revision)
        return Flow.from_wire((yield Call("update_flow", args)))

    @api
    def append_plan(self, flow_id: str, plan: dict[str, Any], *,
                    if_revision: int | None = None) -> Steps:
        args = _args(flow_id=flow_id, plan=plan, if_revision=if_revision)
        return Flow.from_wire((yield Call("append_plan", args)))

    @api
    def update_plan(self, flow_id: str, plan: dict[str, Any], *, index: int | None = None,
                    plan_id: str | int | None = None, if_revision: int | None = None) -> Steps:
        args = _args(flow_id=flow_id, plan=plan, index=index, plan_id=plan_id,
                     if_revision=if_revision)
        return Flow.from_wire((yield Call("update_plan", args)))

    @api
    def remove_plan(self, flow_id: str, *, index: int | None = None,
                    plan_id: str | int | None = None, if_revision: int | None = None) -> Steps:
        args = _args(flow_id=flow_id, index=index, plan_id=plan_id, if_revision=if_revision)
        return Flow.from_wire((yield Call("remove_plan", args)))

    @api
    def move_plan(self, flow_id: str, src: int, dst: int, *,
                  if_revision: int | None = None) -> Steps:
        args = _args(flow_id=flow_id, src=src, dst=dst, if_revision=if_revision)
        return Flow.from_wire((yield Call("move_plan", args)))

    @api
    def commit_batch(self, ops: list[dict[str, Any]]) -> Steps:
        """Apply ``[{"op", "args"}, ...]`` atomically under one revision; results in order."""
        return (yield Call("batch", {"ops": ops}))


class BatchBuilder:
    """Collects operations for one atomic batch (``with client.batch() as b``)."""

    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] = []
        self.results: list[Any] | None = None

    def _add(self, op: str, **kw: Any) -> BatchBuilder:
        self.ops.append({"op": op, "args": _args(**kw)})
        return self

    def add_flow(self, name: str, plans: list[dict[str, Any]] | None = None, *,
                 flow_id: str | None = None,
                 extra: dict[str, Any] | None = None) -> BatchBuilder:
        return self._add("add_flow", name=name, plans=plans, flow_id=flow_id, extra=extra)

    def update_flow(self, flow_id: str, *, name: str | None = None,
                    plans: list[dict[str, Any]] | None = None,
                    extra: dict[str, Any] | None = None,
                    if_revision: int | None = None) -> BatchBuilder:
        return self._add("update_flow", flow_id=flow_id, name=name, plans=plans, extra=extra,
                         if_revision=if_revision)

    def delete_flow(self, flow_id: str, if_revision: int | None = None) -> BatchBuilder:
        return self._add("delete_flow", flow_id=flow_id, if_revision=if_revision)

    def set_current(self, flow_id: str) -> BatchBuilder:
        return self._add("set_current", flow_id=flow_id)

    def append_plan(self, flow_id: str, plan: dict[str, Any], *,
                    if_revision: int | None = None) -> BatchBuilder:
        return self._add("append_plan", flow_id=flow_id, plan=plan, if_revision=if_revision)

    def update_plan(self, flow_id: str, plan: dict[str, Any], *, index: int | None = None,
                    plan_id: str | int | None = None,
                    if_revision: int | None = None) -> BatchBuilder:
        return self._add("update_plan", flow_id=flow_id, plan=plan, index=index,
                         plan_id=plan_id, if_revision=if_revision)

    def remove_plan(self, flow_id: str, *, index: int | None = None,
                    plan_id: str | int | None = None,
                    if_revision: int | None = None) -> BatchBuilder:
        return self._add("remove_plan", flow_id=flow_id, index=index, plan_id=plan_id,
                         if_revision=if_revision)

    def move_plan(self, flow_id: str, src: int, dst: int, *,
                  if_revision: int | None = None) -> BatchBuilder:
        return self._add("move_plan", flow_id=flow_id, src=src, dst=dst,
                         if_revision=if_revision)

    def check(self, flow_id: str, revision: int | None) -> BatchBuilder:
        """Precondition: the flow is at ``revision`` (None: it must not exist)."""
        self.ops.append({"op": "check", "args": {"flow_id": flow_id, "revision": revision}})
        return self


__all__ = ["Call", "FlowAPI", "BatchBuilder", "Change", "StoreRead"]
