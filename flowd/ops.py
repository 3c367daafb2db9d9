"""What each write op does to a transaction, and what each read op returns.

The protocol's op table (``flowd_client.protocol.OPS``) names these functions
(``ops.<name>``); WRITES and READS are derived from it. Arguments arrive
already type-checked by ``flowd_client.protocol.check_args``;
these functions check what needs the store (existence, revisions, indexes).
Every write either raises before staging anything or stages a complete change,
so a failed op leaves its transaction as it was (the caller discards it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowd_client.errors import ConflictError, InvalidArgumentError, NotFoundError
from flowd_client.protocol import OPS

from .store import Flow, Store, Txn

Args = dict[str, Any]


def _require(txn: Txn, args: Args) -> Flow:
    fid = args["flow_id"]
    flow = txn.get(fid)
    if flow is None:
        raise NotFoundError(f"no flow {fid!r}", {"flow_id": fid})
    _check_revision(fid, flow, args.get("if_revision"))
    return flow


def _check_revision(fid: str, flow: Flow | None, expected: int | None) -> None:
    if expected is None:
        return
    actual = None if flow is None else flow.get("revision", 0)
    if actual != expected:
        raise ConflictError(
            f"flow {fid!r} is at revision {actual}, not {expected}",
            {"flow_id": fid, "current_revision": actual, "expected_revision": expected},
        )


# ------------------------------------------------------------------ writes


def add_flow(txn: Txn, args: Args) -> str:
    """A new flow, current from now on; ``flow_id`` (imports, restores) must be free."""
    fid = args.get("flow_id")
    if fid is None:
        fid = txn.new_id()
    elif (existing := txn.get(fid)) is not None:
        raise ConflictError(f"flow {fid!r} already exists",
                            {"flow_id": fid, "current_revision": existing["revision"]})
    ts = txn.ts
    flow = {"id": fid, "name": args["name"], "plans": args.get("plans") or [],
            "created": ts, "updated": ts, "revision": txn.rev, **(args.get("extra") or {})}
    txn.put("add_flow", flow)
    txn.mark_current(fid)
    return fid


def update_flow(txn: Txn, args: Args) -> Flow:
    flow = dict(_require(txn, args))
    if args.get("name") is not None:
        flow["name"] = args["name"]
    if args.get("plans") is not None:
        flow["plans"] = args["plans"]
    if args.get("extra"):
        flow.update(args["extra"])
    return txn.put("update_flow", txn.stamp(flow))


def delete_flow(txn: Txn, args: Args) -> bool:
    fid = args["flow_id"]
    flow = txn.get(fid)
    if flow is None:
        if args.get("if_revision") is not None:
            _check_revision(fid, None, args["if_revision"])
        return False
    _check_revision(fid, flow, args.get("if_revision"))
    txn.delete("delete_flow", fid)
    return True


def set_current(txn: Txn, args: Args) -> bool:
    fid = args["flow_id"]
    if txn.get(fid) is None:
        return False
    txn.mark_current(fid)
    return True


def _plan_index(plans: list[Any], args: Args, *, insert: bool = False) -> int:
    index, plan_id = args.get("index"), args.get("plan_id")
    if (index is None) == (plan_id is None):
        raise InvalidArgumentError("give exactly one of 'index' or 'plan_id'")
    if plan_id is not None:
        for i, plan in enumerate(plans):
            if isinstance(plan, dict) and plan.get("id") == plan_id:
                return i
        raise NotFoundError(f"no plan with id {plan_id!r}", {"plan_id": plan_id})
    n = len(plans)
    assert index is not None  # exactly one of the two was given
    if not -n <= index < n:
        raise NotFoundError(f"plan index {index} out of range (the flow has {n} plans)")
    return index % n


def append_plan(txn: Txn, args: Args) -> Flow:
    flow = dict(_require(txn, args))
    flow["plans"] = [*flow["plans"], args["plan"]]
    return txn.put("append_plan", txn.stamp(flow))


def update_plan(txn: Txn, args: Args) -> Flow:
    flow = dict(_require(txn, args))
    plans = list(flow["plans"])
    i = _plan_index(plans, args)
    plan = args["plan"]
    if args.get("plan_id") is not None and "id" not in plan:
        plan = {"id": args["plan_id"], **plan}
    plans[i] = plan
    flow["plans"] = plans
    return txn.put("update_plan", txn.stamp(flow))


def remove_plan(txn: Txn, args: Args) -> Flow:
    flow = dict(_require(txn, args))
    plans = list(flow["plans"])
    del plans[_plan_index(plans, args)]
    flow["plans"] = plans
    return txn.put("remove_plan", txn.stamp(flow))


def move_plan(txn: Txn, args: Args) -> Flow:
    flow = dict(_require(txn, args))
    plans = list(flow["plans"])
    n = len(plans)
    src, dst = args["src"], args["dst"]
    if not (-n <= src < n and -n <= dst < n):
        raise NotFoundError(f"plan index out of range (the flow has {n} plans)")
    plans.insert(dst % n, plans.pop(src % n))
    flow["plans"] = plans
    return txn.put("move_plan", txn.stamp(flow))


def check(txn: Txn, args: Args) -> bool:
    """A batch precondition: the flow is at ``revision`` (null: it does not exist)."""
    fid, expected = args["flow_id"], args["revision"]
    flow = txn.get(fid)
    actual = None if flow is None else flow.get("revision", 0)
    if actual != expected:
        raise ConflictError(
            f"flow {fid!r} is at revision {actual}, not {expected}",
            {"flow_id": fid, "current_revision": actual, "expected_revision": expected},
        )
    return True


def batch(txn: Txn, args: Args) -> list[Any]:
    """All or nothing under one revision: the first failure names its operation."""
    results = []
    for i, item in enumerate(args["ops"]):
        op = item["op"]
        try:
            results.append(WRITES[op](txn, item.get("args", {})))
        except (ConflictError, NotFoundError, InvalidArgumentError) as exc:
            exc.message = f"batch operation {i} ({op}) failed: {exc.message}"
            exc.args = (exc.message,)
            exc.data = {**exc.data, "index": i, "op": op}
            raise
    return results


# ------------------------------------------------------------------ reads


def get_flow(store: Store, args: Args) -> Flow | None:
    return store.flows.get(args["flow_id"])


def get_current(store: Store, args: Args) -> dict[str, Any]:
    cur = store.current_flow_id
    return {"current_flow_id": cur, "flow": store.flows.get(cur) if cur else None,
            "revision": store.revision}


def find_by_name(store: Store, args: Args) -> list[Flow]:
    return store.find_by_name(args["name"])


def _handlers(*kinds: str) -> dict[str, Callable[[Any, Args], Any]]:
    """The functions of this module the protocol's op table names, by op."""
    here = globals()
    return {name: here[op.handler.removeprefix("ops.")] for name, op in OPS.items()
            if op.kind in kinds and op.handler.startswith("ops.")}


#: write ops (and a batch's ``check``) -> fn(txn, args)
WRITES: dict[str, Callable[[Txn, Args], Any]] = _handlers("write", "check")
#: read ops that need only the store -> fn(store, args)
READS: dict[str, Callable[[Store, Args], Any]] = _handlers("read")
