"""The paged read of the whole store, as both clients run it (flowd_client.api), with
the daemon's side played here: pages as JSON text, and the decoded pages of a daemon
from before that form, which refuses the argument (no daemon of that age can be
started from this tree, so its refusal is the real one, reproduced from the op
table's own check)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import orjson
import pytest
from flowd_client.aio import AsyncFlowClient
from flowd_client.api import StoreRead, store_steps
from flowd_client.connection import drive
from flowd_client.errors import FlowdError, InvalidArgumentError, ProtocolError
from flowd_client.model import Flow
from flowd_client.protocol import PAGE_JSON, check_args

FLOWS = [{"id": f"flow_{i:08x}", "name": f"n{i}", "plans": [{"i": i}], "created": "c",
          "updated": "u", "revision": i + 1} for i in range(5)]


def _json_page(flows: list[dict[str, Any]], nxt: str | None) -> dict[str, Any]:
    """A page as the daemon sends it: its store lines joined into one JSON object."""
    lines = [b'    %s: %s' % (orjson.dumps(f["id"]), orjson.dumps(f)) for f in flows]
    return {PAGE_JSON: b"{" + b",".join(lines) + b"}", "next": nxt, "revision": 9,
            "current_flow_id": flows[-1]["id"]}


class FakeConnection:
    """Answers get_all_flows in pages of two, refusing ``json`` when ``old``."""

    def __init__(self, old: bool) -> None:
        self.old = old
        self.calls: list[dict[str, Any]] = []

    def request(self, op: str, args: dict[str, Any], write: bool) -> tuple[Any, None]:
        self.calls.append(dict(args))
        if self.old and "json" in args:
            spec = {"limit", "cursor"}  # the op table before JSON pages
            raise InvalidArgumentError(f"{op}: unknown argument(s) {sorted(set(args) - spec)}")
        check_args(op, args)
        start = int(args.get("cursor") or 0)
        chunk, nxt = FLOWS[start:start + 2], str(start + 2) if start + 2 < len(FLOWS) else None
        if args.get("json"):
            return _json_page(chunk, nxt), None
        return {"flows": chunk, "next": nxt, "revision": 9,
                "current_flow_id": chunk[-1]["id"]}, None


@pytest.mark.parametrize("old", [False, True])
def test_the_whole_store_from_either_form_of_pages(old: bool) -> None:
    conn = FakeConnection(old)
    got: StoreRead = drive(conn, store_steps())  # type: ignore[arg-type]
    assert [f.to_dict() for f in got.flows.values()] == FLOWS
    assert list(got.flows) == [f["id"] for f in FLOWS]
    assert (got.revision, got.current_flow_id) == (9, FLOWS[-1]["id"])
    if old:  # refused once, then every page in the decoded form
        assert conn.calls == [{"json": True}, {}, {"cursor": "2"}, {"cursor": "4"}]
    else:  # every page asks for JSON, the cursor's pages included
        assert conn.calls == [{"json": True}, {"json": True, "cursor": "2"},
                              {"json": True, "cursor": "4"}]


def test_any_other_refusal_still_reaches_the_caller() -> None:
    class Away(FakeConnection):
        def request(self, op: str, args: dict[str, Any], write: bool) -> tuple[Any, None]:
            if args.get("cursor"):
                raise FlowdError("the cursor expired")
            return super().request(op, args, write)

    with pytest.raises(FlowdError, match="cursor expired"):
        drive(Away(False), store_steps())  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [b"[1, 2]", b"{\"a\": ", b"\xff", 7])
def test_a_page_that_is_no_json_object_is_a_protocol_error(raw: Any) -> None:
    class Garbled(FakeConnection):
        def request(self, op: str, args: dict[str, Any], write: bool) -> tuple[Any, None]:
            return {PAGE_JSON: raw, "next": None, "revision": 1, "current_flow_id": None}, None

    with pytest.raises(ProtocolError, match="page of flows"):
        drive(Garbled(False), store_steps())  # type: ignore[arg-type]


@pytest.mark.parametrize("old", [False, True])
def test_the_async_client_drives_the_same_steps(old: bool) -> None:
    conn = FakeConnection(old)

    class Fake:
        async def _request(self, op: str, args: dict[str, Any], write: bool) -> Any:
            return conn.request(op, args, write)[0]

    got = asyncio.run(AsyncFlowClient._drive(Fake(), store_steps()))  # type: ignore[arg-type]
    assert [f.to_dict() for f in got.flows.values()] == FLOWS
    assert conn.calls[:2] == ([{"json": True}, {}] if old else
                              [{"json": True}, {"json": True, "cursor": "2"}])


@pytest.mark.parametrize("enabled", [True, False])
def test_pages_decode_with_the_gc_paused_and_leave_it_as_found(
        enabled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    real = Flow.from_wire

    def from_wire(d: dict[str, Any]) -> Flow:
        seen.append(gc.isenabled())
        return real(d)

    monkeypatch.setattr(Flow, "from_wire", staticmethod(from_wire))
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        drive(FakeConnection(False), store_steps())  # type: ignore[arg-type]
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False] * len(FLOWS)
