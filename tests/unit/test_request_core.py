"""The sans-IO request core both clients run: no sockets, so its decisions are tested
here directly (the behaviour matrix runs the clients themselves)."""

from __future__ import annotations

import time

import pytest
from flowd_client import ConflictError, TooLargeError
from flowd_client.errors import ProtocolError
from flowd_client.protocol import MIN_REQUEST_LIMIT, pack, unpack
from flowd_client.request_core import RequestCore


def test_writes_get_a_key_reads_do_not_and_ids_are_fresh() -> None:
    core = RequestCore()
    read, write = core.request("ping", {}, False), core.request("add_flow", {"name": "a"}, True)
    assert read.rid != write.rid
    assert "key" not in unpack(read.frame)
    assert unpack(write.frame)["key"] == [core.client_id, 1]


def test_a_big_frame_asks_hello_first_and_is_refused_over_the_limit() -> None:
    core = RequestCore()
    small = core.request("ping", {}, False)
    big = core.request("add_flow", {"name": "x" * 2000}, True)
    assert not core.needs_limit(small) and core.needs_limit(big)
    hello = core.hello(big)
    assert unpack(hello.frame)["op"] == "hello" and hello.deadline == big.deadline
    core.learn_limit({"max_request_bytes": MIN_REQUEST_LIMIT})
    with pytest.raises(TooLargeError) as err:
        core.check_size(big)
    assert err.value.data["limit"] == MIN_REQUEST_LIMIT
    core.forget_limit()
    assert core.needs_limit(big)


def test_replies_match_by_id_and_an_id_less_error_goes_to_the_oldest() -> None:
    match = RequestCore.match
    assert match({"id": 5, "result": 1}, {4: None, 5: None}) == 5
    assert match({"id": 9, "result": 1}, (5,)) is None  # a late reply to an old attempt
    assert match({}, (5,)) is None  # a padding
    assert match({"error": {"code": "PROTOCOL", "message": "x"}}, {7: None, 4: None}) == 4
    assert match({"result": 1}, (5,)) is None  # an id-less success answers nothing


def test_the_deadline_is_split_over_the_attempts_left() -> None:
    core = RequestCore(timeout=3.0, retries=2)
    req = core.request("ping", {}, False)
    first = core.wait_until(req, 0) - time.monotonic()
    last = core.wait_until(req, 2) - time.monotonic()
    assert 0.9 < first <= 1.0 and 2.9 < last <= 3.0


def test_error_replies_become_their_exceptions() -> None:
    msg = RequestCore.decode(pack({"id": 1, "error": {"code": "CONFLICT", "message": "m",
                                                      "data": {"flow_id": "f"}}}))
    with pytest.raises(ConflictError):
        RequestCore.outcome(msg)
    assert RequestCore.outcome({"id": 1, "result": "r", "rev": 3}) == ("r", 3)


def test_a_reply_may_carry_a_page_of_json_but_a_request_no_big_binary() -> None:
    """A JSON page is one binary value of about a megabyte: replies take it, requests
    keep their small limit on binaries (nothing a request carries is binary)."""
    page = pack({"id": 1, "result": {"flows_json": b"{" + b" " * 100_000 + b"}"}})
    assert len(RequestCore.decode(page)["result"]["flows_json"]) == 100_002
    with pytest.raises(ProtocolError):
        unpack(page)
