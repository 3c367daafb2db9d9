"""Issue 14, the pure parts: key files as hostile input, the allow-list, ZAP answers, and the
client's reading of handshake events and key files."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq
import zmq.auth
from flowd_client import NotAllowedError
from flowd_client.curve import certificate_text, events_endpoint, load_keys, server_key, verdict
from flowd_client.errors import InvalidArgumentError
from zmq.utils import z85

from flowd.curve_keys import ZAP_DOMAIN, AllowList, Gate, KeyFileError, parse_public_key


def pair() -> tuple[bytes, bytes]:
    return zmq.curve_keypair()


def zap_request(key: bytes, domain: bytes = ZAP_DOMAIN, mechanism: bytes = b"CURVE") -> list:
    return [b"1.0", b"7", domain, b"10.0.0.9", b"", mechanism, z85.decode(key)]


def test_certificate_text_is_read_by_zmq_auth(tmp_path: Path) -> None:
    public, secret = pair()
    (tmp_path / "a.key").write_bytes(certificate_text(public))
    (tmp_path / "a.key_secret").write_bytes(certificate_text(public, secret))
    assert zmq.auth.load_certificate(str(tmp_path / "a.key")) == (public, None)
    assert zmq.auth.load_certificate(str(tmp_path / "a.key_secret")) == (public, secret)
    assert parse_public_key(certificate_text(public)) == public


def test_zmq_auth_files_are_accepted(tmp_path: Path) -> None:
    pub_path, _ = zmq.auth.create_certificates(str(tmp_path), "tool")
    public, _ = zmq.auth.load_certificate(pub_path)
    assert parse_public_key(Path(pub_path).read_bytes()) == public


@pytest.mark.parametrize("data", [
    b"", b"garbage", b'public-key = "short"', b"x" * 5000,
    b'public-key = "' + b"\xff" * 40 + b'"',
    certificate_text(*pair()),  # a secret key file is never an allow-list entry
    certificate_text(pair()[0]) + certificate_text(pair()[0]),  # two keys
])
def test_bad_key_files_are_refused(data: bytes) -> None:
    with pytest.raises(KeyFileError):
        parse_public_key(data)


def test_allow_list_skips_bad_files_and_keeps_the_rest() -> None:
    a, b = pair()[0], pair()[0]
    allow, problems = AllowList.parse([
        ("alice.key", certificate_text(a)), ("bob.key", certificate_text(b)),
        ("bad.key", b"nonsense"), ("../x.key", certificate_text(pair()[0])),
        ("notes.txt", b"hi"), ("zed.key", certificate_text(a))])
    assert allow.names == {a: "alice", b: "bob"}
    assert len(problems) == 4
    assert any("bad.key" in p for p in problems) and any("same key" in p for p in problems)
    assert allow.name_of(a.decode()) == "alice" and allow.name_of(None) is None


def test_zap_allows_listed_keys_only_in_flowds_domain() -> None:
    a, other = pair()[0], pair()[0]
    gate = Gate(AllowList({a: "alice"}))
    assert gate.answer(zap_request(a)) == [b"1.0", b"7", b"200", b"OK", a, b""]
    for req in (zap_request(other), zap_request(a, domain=b"other"),
                zap_request(a, mechanism=b"NULL")[:6], [b"2.0", b"1"], []):
        reply = gate.answer(req)
        assert reply[2] == b"400" and reply[4] == b""
    assert gate.handshakes_refused == 5


def test_revoked_key_is_refused_per_request_and_counted_per_name() -> None:
    a, b = pair()[0], pair()[0]
    gate = Gate(AllowList({a: "alice", b: "bob"}))
    assert [gate.admit(a.decode()), gate.admit(a.decode()), gate.admit(b.decode())] == [
        "alice", "alice", "bob"]
    assert gate.replace(AllowList({b: "bob"})) == (0, 1)
    assert gate.admit(a.decode()) is None and gate.admit(None) is None
    assert gate.stats() == {"keys_allowed": 1, "requests_by_key": {"alice": 2, "bob": 1},
                            "handshakes_refused": 0, "requests_refused": 2}


def test_handshake_events_become_key_not_allowed() -> None:
    ep = "tcp://h:1"
    assert verdict(ep, zmq.EVENT_CONNECTED, 0, True) is None
    for event in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                  zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
        for curve in (True, False):
            exc = verdict(ep, event, 400, curve)
            assert isinstance(exc, NotAllowedError)
            assert ep in exc.message and "key not allowed" in exc.message


def test_events_endpoint_seen_from_a_remote_host() -> None:
    assert events_endpoint("tcp://box:5555", "tcp://0.0.0.0:5556") == "tcp://box:5556"
    assert events_endpoint("tcp://box:5555", "tcp://*:5556") == "tcp://box:5556"
    assert events_endpoint("tcp://box:5555", "tcp://10.1.1.1:5556") == "tcp://10.1.1.1:5556"
    assert events_endpoint(None, "ipc:///x") == "ipc:///x"


def test_client_keys_from_files_text_or_environment(tmp_path: Path) -> None:
    public, secret = pair()
    spub, _ = pair()
    (tmp_path / "me.key_secret").write_bytes(certificate_text(public, secret))
    (tmp_path / "me.key").write_bytes(certificate_text(public))
    (tmp_path / "server.key").write_bytes(certificate_text(spub))
    keys = load_keys(tmp_path / "me.key_secret", tmp_path / "server.key", {})
    assert keys is not None and (keys.public, keys.secret, keys.server) == (public, secret, spub)
    assert server_key(spub.decode()) == spub
    env = {"FLOWD_CURVE_SECRET": str(tmp_path / "me.key_secret"),
           "FLOWD_CURVE_SERVER": spub.decode()}
    assert load_keys(None, None, env) == keys
    assert load_keys(None, None, {}) is None
    for secret_path, server in ((tmp_path / "me.key", spub.decode()),  # no secret half
                                (tmp_path / "me.key_secret", None),  # half a setting
                                (tmp_path / "missing", spub.decode())):
        with pytest.raises(InvalidArgumentError):
            load_keys(secret_path, server, {})


def test_curve_sockets_fail_closed_without_a_zap_handler() -> None:
    """use_curve enforces ZAP: were the handler ever missing, nobody gets in (libzmq's
    default would let every key in)."""
    from flowd.listen import use_curve

    ctx = zmq.Context()
    spub, ssec = pair()
    cpub, csec = pair()
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    try:
        use_curve(router, ssec, ZAP_DOMAIN)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        for opt, value in ((zmq.CURVE_PUBLICKEY, cpub), (zmq.CURVE_SECRETKEY, csec),
                           (zmq.CURVE_SERVERKEY, spub), (zmq.LINGER, 0)):
            dealer.setsockopt(opt, value)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(b"knock")
        assert not router.poll(500)
    finally:
        dealer.close(0)
        router.close(0)
        ctx.term()
