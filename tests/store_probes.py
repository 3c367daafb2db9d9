"""Probes on a running daemon's store shared by the integration tests: wait for a
condition to hold, read the store's revision, and a flow id that never exists."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flowd_client import FlowClient

VISIBLE_WITHIN = 5.0  # generous bound for "another tool's write shows up" on a loaded box
MISSING = "flow_00000000"


def wait_until(pred: Callable[[], Any], timeout: float = VISIBLE_WITHIN,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.005)


def revision(client: FlowClient) -> int:
    return client.ping()["revision"]

