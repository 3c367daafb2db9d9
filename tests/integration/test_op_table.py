"""The op table is the one list of ops: every entry has a daemon handler, is reachable
from the client API (a batch-only op from BatchBuilder), and a real flowd dispatches it
(a refusal is fine; UNKNOWN_OP or INTERNAL is not)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from flowd_client import FlowClient, FlowdError
from flowd_client.api import BatchBuilder, FlowAPI
from flowd_client.errors import InternalError, UnknownOpError
from flowd_client.feed import Sequencer
from flowd_client.protocol import BATCH_OPS, OPS, PROTOCOL_VERSION
from flowd_client.request_core import Steps

from flowd import ops
from flowd.request_handler import RequestHandler

FLOW = {"id": "f", "name": "n", "plans": [], "created": "", "updated": "", "revision": 1}
#: what a fake daemon answers, by op, so that each method's result conversion runs
ANSWERS: dict[str, Any] = {
    "get_all_flows": {"flows": [], "next": None, "revision": 0, "current_flow_id": None},
    "history": {"changes": [], "revision": 0},
    "get_current": {"current_flow_id": None, "flow": None},
    "find_by_name": [],
    **{op: FLOW for op in ("update_flow", "append_plan", "update_plan", "remove_plan",
                           "move_plan")},
}
#: a value for each parameter name of the API's methods
SAMPLES: dict[str, Any] = {"flow_id": "f", "name": "n", "plan": {}, "src": 0, "dst": 0,
                           "since": 0, "ops": [], "seq": Sequencer(0), "force": False,
                           "revision": 1}


class Recorder(FlowAPI):
    """A FlowAPI whose driver answers from ANSWERS and notes each op."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def _drive(self, steps: Steps) -> Any:
        try:
            call = next(steps)
            while True:
                self.seen.add(call.op)
                call = steps.send(ANSWERS.get(call.op))
        except StopIteration as done:
            return done.value


def call_every_method(obj: Any) -> None:
    for name, fn in inspect.getmembers(type(obj), inspect.isfunction):
        if name.startswith("_"):
            continue
        params = list(inspect.signature(fn).parameters.values())[1:]
        args = [SAMPLES[p.name] for p in params if p.default is inspect.Parameter.empty]
        getattr(obj, name)(*args)


def test_every_op_has_its_daemon_handler() -> None:
    for name, op in OPS.items():
        where, handler = op.handler.split(".", 1)
        assert where in ("ops", "handler"), (name, op.handler)
        home = ops if where == "ops" else RequestHandler
        assert callable(getattr(home, handler, None)), (name, op.handler)
    assert set(ops.WRITES) == {n for n, op in OPS.items()
                               if op.write and op.handler.startswith("ops.")}


def test_every_op_is_reachable_from_the_client_api() -> None:
    api = Recorder()
    call_every_method(api)
    batch = BatchBuilder()
    call_every_method(batch)
    in_batches = {item["op"] for item in batch.ops}
    assert in_batches == BATCH_OPS
    assert api.seen | in_batches == set(OPS)


def minimal_args(op: str, fid: str) -> dict[str, Any]:
    """The op's required arguments, with values that pass its checks."""
    values = {"flow_id": fid, "name": "n", "plan": {}, "src": 0, "dst": 0, "since": 0,
              "version": PROTOCOL_VERSION, "revision": None,
              "ops": [{"op": "check", "args": {"flow_id": "absent", "revision": None}}]}
    return {a: values[a] for a, (_, required) in OPS[op].args.items() if required}


@pytest.mark.parametrize("op", sorted(n for n, spec in OPS.items() if spec.kind != "check"))
def test_the_daemon_dispatches_every_op(client: FlowClient, op: str) -> None:
    fid = client.add_flow("target", [{"id": "p"}])
    try:
        client._connection.request(op, minimal_args(op, fid), OPS[op].write)
    except (UnknownOpError, InternalError):
        raise
    except FlowdError:
        pass  # refused by its handler: dispatched
