"""Issue 14: ``flowctl keys``: key files in zmq.auth's format, modes, atomic edits of the
allow-list, and one-line refusals for bad input."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq.auth
from flowd_client.cli import main as flowctl


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_new_allow_list_revoke(tmp_path: Path, capsys) -> None:
    keys, curve = tmp_path / "keys", tmp_path / "curve"
    assert flowctl(["keys", "new", "tool", "--dir", str(keys)]) == 0
    assert mode(keys / "tool.key_secret") == 0o600 and mode(keys / "tool.key") == 0o644
    public, secret = zmq.auth.load_certificate(str(keys / "tool.key_secret"))
    assert secret is not None and zmq.auth.load_certificate(str(keys / "tool.key"))[0] == public
    assert flowctl(["keys", "allow", str(keys / "tool.key"), "--curve-dir", str(curve)]) == 0
    assert (curve / "clients" / "tool.key").exists()
    assert not [p for p in (curve / "clients").iterdir() if p.name.startswith(".")]
    capsys.readouterr()
    assert flowctl(["keys", "list", "--curve-dir", str(curve)]) == 0
    assert f"tool\t{public.decode()}" in capsys.readouterr().out
    assert flowctl(["keys", "revoke", "tool", "--curve-dir", str(curve)]) == 0
    assert not (curve / "clients" / "tool.key").exists()


@pytest.mark.parametrize("argv", [
    ["keys", "new", "../evil"],
    ["keys", "revoke", "nobody", "--curve-dir", "CURVE"],
    ["keys", "allow", "KEYS/tool.key_secret", "--curve-dir", "CURVE"],
    ["keys", "allow", "KEYS/missing.key", "--curve-dir", "CURVE"],
    ["keys", "list"],
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, argv: list[str],
                                          monkeypatch) -> None:
    monkeypatch.delenv("FLOWD_CURVE_DIR", raising=False)
    keys = tmp_path / "keys"
    assert flowctl(["keys", "new", "tool", "--dir", str(keys)]) == 0
    capsys.readouterr()
    argv = [a.replace("KEYS", str(keys)).replace("CURVE", str(tmp_path / "curve")) for a in argv]
    assert flowctl(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("flowctl: ")


def test_new_never_overwrites(tmp_path: Path) -> None:
    assert flowctl(["keys", "new", "tool", "--dir", str(tmp_path)]) == 0
    before = (tmp_path / "tool.key_secret").read_bytes()
    assert flowctl(["keys", "new", "tool", "--dir", str(tmp_path)]) == 2
    assert (tmp_path / "tool.key_secret").read_bytes() == before
