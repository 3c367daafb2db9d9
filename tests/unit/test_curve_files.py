"""Issue 14: the files of --curve-dir (the daemon's key pair, the allow-list directory)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq.auth
from flowd_client.curve import certificate_text

from flowd.storage.curve_files import (
    CurveDirRefused,
    read_client_keys,
    server_keys,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_server_pair_made_once_0600_and_read_back(tmp_path: Path) -> None:
    d = tmp_path / "curve"
    made = server_keys(d)
    assert made.created
    assert mode(d / "server.key") == mode(d / "server.key_secret") == 0o600
    assert mode(d / "clients") == 0o700
    assert zmq.auth.load_certificate(str(d / "server.key_secret")) == (made.public, made.secret)
    again = server_keys(d)
    assert (again.public, again.secret, again.created) == (made.public, made.secret, False)
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temp file left


def test_unsafe_or_half_pairs_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "curve"
    server_keys(d)
    os.chmod(d / "server.key_secret", 0o644)
    with pytest.raises(CurveDirRefused, match="readable by others"):
        server_keys(d)
    os.chmod(d / "server.key_secret", 0o600)
    (d / "server.key").write_bytes(certificate_text(zmq.curve_keypair()[0]))
    with pytest.raises(CurveDirRefused, match="public half"):
        server_keys(d)
    (d / "server.key").unlink()
    with pytest.raises(CurveDirRefused, match="without its other half"):
        server_keys(d)


def test_client_dir_is_read_as_hostile_input(tmp_path: Path) -> None:
    d = tmp_path / "curve"
    server_keys(d)
    clients = d / "clients"
    good = certificate_text(zmq.curve_keypair()[0])
    (clients / "alice.key").write_bytes(good)
    (clients / "big.key").write_bytes(b"x" * 100_000)
    (clients / ".alice.key.tmp").write_bytes(b"half")
    (tmp_path / "elsewhere.key").write_bytes(good)
    (clients / "link.key").symlink_to(tmp_path / "elsewhere.key")
    os.mkfifo(clients / "fifo.key")
    files, problems = read_client_keys(d)
    assert dict(files)["alice.key"] == good
    assert len(dict(files)["big.key"]) <= 4097  # bounded read; the parser refuses it
    assert {n for n, _ in files} == {"alice.key", "big.key"}
    assert len(problems) == 2 and any("link.key" in p for p in problems)
