"""etcd endpoint URLs and TLS files, checked before any connection is made.

Pure (no grpc), so that a bad --etcd-endpoints or --etcd-cacert is one clear
line at start-up, tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from flowd_client.errors import InvalidArgumentError

#: certificates and keys are small; a bigger file is the wrong file
MAX_TLS_FILE = 1 << 20


def read_tls_file(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TLS_FILE + 1)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read the etcd {what} {path}: {exc}") from exc
    if not data or len(data) > MAX_TLS_FILE:
        raise InvalidArgumentError(f"the etcd {what} {path} is empty or over 1 MiB")
    return data


def grpc_target(url: str, tls: bool) -> tuple[str, bool]:
    """grpc's "host:port" for an endpoint URL, and whether it speaks TLS."""
    full = url if "://" in url else ("https://" if tls else "http://") + url
    try:
        parts = urlsplit(full)
        port = parts.port or 2379
    except ValueError as exc:
        raise InvalidArgumentError(f"bad etcd endpoint {url!r}: {exc}") from exc
    if (parts.scheme not in ("http", "https") or not parts.hostname
            or parts.path not in ("", "/") or parts.query or parts.fragment
            or parts.username):
        raise InvalidArgumentError(
            f"bad etcd endpoint {url!r}: expected http(s)://host:port")
    if tls and parts.scheme == "http":
        raise InvalidArgumentError(f"etcd TLS files are given but endpoint {url!r} is http://")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", parts.scheme == "https"


def check_options(endpoints: Sequence[str], timeout: float, cert: str | None, key: str | None,
                  *, tls: bool) -> list[tuple[str, str, bool]]:
    """(url, grpc target, speaks TLS) per endpoint, or InvalidArgumentError saying what is wrong."""
    if not endpoints:
        raise InvalidArgumentError("no etcd endpoint given")
    if (cert is None) != (key is None):
        raise InvalidArgumentError("an etcd client certificate needs its key, and a key its "
                                   "certificate")
    if not timeout > 0:
        raise InvalidArgumentError(f"etcd timeout must be positive, not {timeout!r}")
    return [(url, *grpc_target(url, tls)) for url in endpoints]
