"""flowd's CRC-32 is zlib's: files and journals written with either read with the other."""

from __future__ import annotations

import importlib.util
import sys
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowd.storage import checksum


@given(st.binary(max_size=20_000), st.integers(0, 2**32 - 1), st.integers(0, 20_000))
def test_the_same_values_as_zlib_whole_or_in_pieces(data: bytes, value: int, cut: int) -> None:
    assert checksum.crc32(data) == zlib.crc32(data)
    assert checksum.crc32(data, value) == zlib.crc32(data, value)
    view = memoryview(data)
    assert checksum.crc32(view[cut:], checksum.crc32(view[:cut])) == zlib.crc32(data)


def test_the_fast_one_is_in_use() -> None:
    """isal is a dependency: without it every snapshot and start pays 4x for its CRC."""
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    assert checksum.crc32 is isal_zlib.crc32


def test_without_isal_it_falls_back_to_zlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "isal", None)
    monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)
    spec = importlib.util.spec_from_file_location("checksum_without_isal", checksum.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.crc32 is zlib.crc32
