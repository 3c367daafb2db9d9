"""flowd.heap: giving freed heap pages back is best effort and never fails a start."""

from __future__ import annotations

import ctypes

import pytest

from flowd import heap


def test_release_runs_where_the_c_library_has_malloc_trim() -> None:
    heap.release_free_memory()


@pytest.mark.parametrize("error", [OSError, AttributeError])
def test_release_is_a_no_op_without_malloc_trim(monkeypatch, error: type[Exception]) -> None:
    def no_libc(name: object) -> object:
        raise error("no such library or symbol")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    heap.release_free_memory()
