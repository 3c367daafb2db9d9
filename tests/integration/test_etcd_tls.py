"""The etcd adapter over TLS with client certificates, against a real etcd."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from etcd_cluster import make_tls_files
from flowd_client.errors import InvalidArgumentError, UnavailableError

from flowd.etcd_adapter import EtcdAdapter
from flowd.etcd_types import Put

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="openssl is not on PATH: it makes the test certificates")


@needs_openssl
def test_tls_with_a_client_certificate(etcd_cluster, tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    cluster = etcd_cluster(1, tls=tls)
    url = cluster.endpoints[0]
    assert url.startswith("https://")
    with EtcdAdapter([url], timeout=5.0, cacert=str(tls.ca), cert=str(tls.client_cert),
                     key=str(tls.client_key)) as a:
        rev = a.txn([], [Put(b"/tls/k", b"v")]).revision
        assert a.get(b"/tls/k")[0].mod_revision == rev  # type: ignore[union-attr]
    # host:port without a scheme speaks TLS when TLS files are given
    bare = url.removeprefix("https://")
    with EtcdAdapter([bare], timeout=5.0, cacert=str(tls.ca), cert=str(tls.client_cert),
                     key=str(tls.client_key)) as a:
        assert a.current_revision() >= rev
    # without a client certificate etcd refuses the handshake
    with EtcdAdapter([url], timeout=1.0, cacert=str(tls.ca)) as a, \
            pytest.raises(UnavailableError) as err:
        a.get(b"/tls/k")
    assert url in err.value.message
    # a CA that did not sign the server's certificate: refused too
    other = make_tls_files(tmp_path / "other")
    with EtcdAdapter([url], timeout=1.0, cacert=str(other.ca), cert=str(tls.client_cert),
                     key=str(tls.client_key)) as a, pytest.raises(UnavailableError):
        a.get(b"/tls/k")
    # plain http to a TLS member
    with EtcdAdapter([url.replace("https", "http")], timeout=1.0) as a, \
            pytest.raises(UnavailableError):
        a.get(b"/tls/k")


def test_tls_options_are_checked_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="needs its key"):
        EtcdAdapter(["https://127.0.0.1:1"], cert=str(tmp_path / "c.crt"))
    with pytest.raises(InvalidArgumentError, match="cannot read the etcd CA"):
        EtcdAdapter(["https://127.0.0.1:1"], cacert=str(tmp_path / "missing.crt"))
    with pytest.raises(InvalidArgumentError, match="is http://"):
        EtcdAdapter(["http://127.0.0.1:1"], cacert=str(tmp_path / "missing.crt"))
    with pytest.raises(InvalidArgumentError, match="no etcd endpoint"):
        EtcdAdapter([])
    with pytest.raises(InvalidArgumentError, match="timeout"):
        EtcdAdapter(["http://127.0.0.1:1"], timeout=0)
