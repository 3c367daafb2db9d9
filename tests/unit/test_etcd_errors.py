"""etcd/grpc failures onto flowd's error table; endpoint URLs; the pure etcd value types.

The status texts are the ones etcd 3.4 and grpc answer with (seen against a
real etcd here, or etcd's rpctypes); the table must give each the class,
reason and "maybe applied" a backend can act on.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from flowd_client.errors import (
    CompactedError,
    InternalError,
    InvalidArgumentError,
    TooLargeError,
    UnavailableError,
)

from flowd.etcd_endpoints import grpc_target, read_tls_file
from flowd.etcd_errors import client_error, compacted_watch, error_for_status, safe_to_retry
from flowd.etcd_types import Compare, prefix_end

EP = "http://127.0.0.1:2379"

CASES = [
    ("INVALID_ARGUMENT", "etcdserver: too many operations in txn request", TooLargeError,
     "too_many_ops", False),
    ("INVALID_ARGUMENT", "etcdserver: request is too large", TooLargeError,
     "request_too_large", False),
    ("RESOURCE_EXHAUSTED", "grpc: received message larger than max (2200011 vs. 2097152)",
     TooLargeError, "request_too_large", False),
    ("RESOURCE_EXHAUSTED", "Received message larger than max (5000011 vs. 4194304)",
     TooLargeError, "request_too_large", False),
    ("RESOURCE_EXHAUSTED", "etcdserver: too many requests", UnavailableError,
     "too_many_requests", False),
    ("RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded", UnavailableError,
     "no_space", False),
    ("OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted", CompactedError,
     "compacted", False),
    ("OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision",
     InvalidArgumentError, "future_revision", False),
    ("OUT_OF_RANGE", "etcdserver: too large lease TTL", InvalidArgumentError, "out_of_range",
     False),
    ("NOT_FOUND", "etcdserver: requested lease not found", InvalidArgumentError,
     "lease_not_found", False),
    ("UNAVAILABLE", "etcdserver: no leader", UnavailableError, "no_leader", False),
    ("UNAVAILABLE", "etcdserver: not capable", UnavailableError, "not_capable", False),
    ("UNAVAILABLE", "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:"
     "23799: Failed to connect to remote host: Connection refused", UnavailableError,
     "unreachable", False),
    ("UNAVAILABLE", "errors resolving nosuchhost.invalid:2379: [field:hostname lookup error]",
     UnavailableError, "unreachable", False),
    ("UNAVAILABLE", "DNS resolution failed for nosuchhost.invalid:2379", UnavailableError,
     "unreachable", False),
    ("UNAVAILABLE", "etcdserver: request timed out", UnavailableError, "timeout", True),
    ("UNAVAILABLE", "etcdserver: request timed out, possibly due to previous leader failure",
     UnavailableError, "timeout", True),
    ("UNKNOWN", "context deadline exceeded", UnavailableError, "timeout", True),
    ("UNAVAILABLE", "etcdserver: leader changed", UnavailableError, "leader_changed", True),
    ("UNAVAILABLE", "etcdserver: server stopped", UnavailableError, "stopped", True),
    ("UNAVAILABLE", "Socket closed", UnavailableError, "connection_lost", True),
    ("UNAVAILABLE", "recvmsg:Connection reset by peer", UnavailableError, "connection_lost",
     True),
    ("DEADLINE_EXCEEDED", "Deadline Exceeded", UnavailableError, "timeout", True),
    ("CANCELLED", "Locally cancelled by application!", UnavailableError, "cancelled", True),
    ("INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request", InvalidArgumentError,
     "invalid_argument", False),
    ("INVALID_ARGUMENT", "etcdserver: key is not provided", InvalidArgumentError,
     "invalid_argument", False),
    ("FAILED_PRECONDITION", "etcdserver: authentication is not enabled", InvalidArgumentError,
     "failed_precondition", False),
    ("PERMISSION_DENIED", "etcdserver: permission denied", InternalError, "permission_denied",
     False),
    ("UNAUTHENTICATED", "etcdserver: invalid auth token", InternalError, "unauthenticated",
     False),
    ("DATA_LOSS", "etcdserver: corrupt cluster", InternalError, "data_loss", False),
    ("UNIMPLEMENTED", "Method not found: etcdserverpb.KV/Range", InternalError, "internal", True),
    ("UNKNOWN", "Exception iterating requests!", InternalError, "internal", True),
    ("INTERNAL", "", InternalError, "internal", True),
]


@pytest.mark.parametrize(("code", "text", "cls", "reason", "maybe"), CASES)
def test_each_status_maps_to_one_flowd_error(code, text, cls, reason, maybe) -> None:
    err = error_for_status(code, text, EP)
    assert type(err) is cls
    assert err.data == {"endpoint": EP, "reason": reason, "grpc_code": code,
                        "maybe_applied": maybe}
    assert EP in err.message and code in err.message
    assert (text or "no detail") in err.message


def test_only_certainly_unapplied_unavailability_is_safe_to_retry() -> None:
    safe = {r for c, t, cls, r, m in CASES if safe_to_retry(error_for_status(c, t, EP))}
    assert safe == {"too_many_requests", "no_space", "no_leader", "not_capable", "unreachable"}


def test_client_side_errors_are_invalid_argument_or_internal() -> None:
    assert isinstance(client_error(EP, ValueError("Value out of range: -1")), InvalidArgumentError)
    assert isinstance(client_error(EP, TypeError("bytes expected")), InvalidArgumentError)
    err = client_error(EP, RuntimeError("boom"))
    assert isinstance(err, InternalError) and EP in err.message


def test_a_compacted_watch_says_from_where_to_resync() -> None:
    err = compacted_watch(EP, 5, 40)
    assert isinstance(err, CompactedError)
    assert err.data["compacted_revision"] == 40 and "40" in err.message and EP in err.message


@pytest.mark.parametrize(("url", "tls", "target", "secure"), [
    ("http://127.0.0.1:2379", False, "127.0.0.1:2379", False),
    ("https://etcd1.example:2379/", False, "etcd1.example:2379", True),
    ("127.0.0.1:23790", False, "127.0.0.1:23790", False),
    ("127.0.0.1:23790", True, "127.0.0.1:23790", True),
    ("http://[::1]:2379", False, "[::1]:2379", False),
    ("http://localhost", False, "localhost:2379", False),
])
def test_endpoint_urls_become_grpc_targets(url, tls, target, secure) -> None:
    assert grpc_target(url, tls) == (target, secure)


@pytest.mark.parametrize(("url", "tls"), [
    ("unix:///run/etcd.sock", False), ("http://h:99999", False), ("http://h:2379/v3", False),
    ("http://u@h:2379", False), ("http://:2379", False), ("http://h:2379", True),
    ("http://h:2379?x=1", False),
])
def test_bad_endpoint_urls_are_one_clear_error(url, tls) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        grpc_target(url, tls)
    assert url in err.value.message


def test_tls_files_must_exist_and_be_small(tmp_path: Path) -> None:
    assert read_tls_file(None, "CA certificate") is None
    with pytest.raises(InvalidArgumentError, match="cannot read the etcd CA"):
        read_tls_file(str(tmp_path / "missing.crt"), "CA certificate")
    (tmp_path / "empty.crt").write_bytes(b"")
    with pytest.raises(InvalidArgumentError, match="empty or over"):
        read_tls_file(str(tmp_path / "empty.crt"), "CA certificate")
    (tmp_path / "ok.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    assert read_tls_file(str(tmp_path / "ok.crt"), "CA certificate") == b"-----BEGIN " \
        b"CERTIFICATE-----\n"


@pytest.mark.parametrize(("prefix", "end"), [
    (b"/flowd/default/", b"/flowd/default0"), (b"a\xff", b"b"), (b"a\xff\xff", b"b"),
    (b"\xff", b"\0"), (b"", b"\0"), (b"a", b"b"),
])
def test_prefix_end_covers_exactly_the_prefix(prefix, end) -> None:
    assert prefix_end(prefix) == end


def test_compare_helpers() -> None:
    assert Compare.mod_revision(b"k", 0) == Compare(b"k", "mod", "==", 0)
    assert Compare.range_unchanged_since(b"a", b"b", 7) == Compare(b"a", "mod", "<", 8, b"b")


FLOWD = Path(__file__).resolve().parents[2] / "flowd"


def test_only_the_adapter_imports_grpc_or_etcd3() -> None:
    for path in [*FLOWD.rglob("*.py"), *(FLOWD.parent / "client").rglob("*.py")]:
        if path.parent == FLOWD / "etcd_adapter":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("grpc", "etcd3", "google"), (path, name)


def test_the_daemon_without_the_etcd_backend_loads_no_grpc() -> None:
    # walk_packages would import the adapter package itself to list its modules
    names = sorted(".".join(("flowd", *p.relative_to(FLOWD).with_suffix("").parts))
                   .removesuffix(".__init__") for p in FLOWD.rglob("*.py"))
    skip = ("flowd.etcd_adapter", "flowd.etcd_backend")
    code = ("import importlib, sys\n"
            f"for name in {[n for n in names if not n.startswith(skip)]!r}:\n"
            "    importlib.import_module(name)\n"
            "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('grpc', 'etcd3'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
