"""CURVE on a tcp client: its key pair, the daemon's public key, and the handshake verdict.

A flowd reached over tcp from another host authenticates every peer by its
CURVE key (ZeroMQ's ZAP). When the daemon refuses a key, libzmq only drops
the connection and tries again, so a client would see a bare timeout; the
socket monitor reports the failed handshake at once, and
:class:`HandshakeMonitor` turns it into :class:`NotAllowedError` naming the
endpoint. Both drivers call :func:`prepare` where they create a socket, and
wait for replies through :func:`wait_reply` (sync) or
:meth:`HandshakeMonitor.follow` (asyncio).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

from .errors import InvalidArgumentError, NotAllowedError

ENV_SECRET = "FLOWD_CURVE_SECRET"
ENV_SERVER = "FLOWD_CURVE_SERVER"
Z85_KEY_LENGTH = 40
_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_ids = itertools.count(1)


@dataclass(frozen=True)
class CurveKeys:
    """This client's key pair and the daemon's public key, all z85 text (40 bytes)."""

    public: bytes
    secret: bytes
    server: bytes

    def apply(self, sock: Any) -> None:
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server)


def is_z85_key(text: str | bytes) -> bool:
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    if len(raw) != Z85_KEY_LENGTH:
        return False
    try:
        return len(z85.decode(raw)) == 32
    except (ValueError, KeyError, TypeError):
        return False


def _certificate(path: str | os.PathLike[str], what: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"{what} {os.fspath(path)}: not a readable CURVE key file "
                                   f"({exc})") from None
    if not is_z85_key(public) or (secret is not None and not is_z85_key(secret)):
        raise InvalidArgumentError(f"{what} {os.fspath(path)}: not a CURVE key file")
    return public, secret


def server_key(value: str | os.PathLike[str]) -> bytes:
    """The daemon's public key: z85 text as is, else the public key in that file."""
    if isinstance(value, str) and is_z85_key(value.strip()):
        return value.strip().encode("ascii")
    return _certificate(value, "curve_server")[0]


def load_keys(secret: str | os.PathLike[str] | None, server: str | os.PathLike[str] | None,
              environ: Mapping[str, str] | None = None) -> CurveKeys | None:
    """The keys from the arguments, else FLOWD_CURVE_SECRET / FLOWD_CURVE_SERVER; None if
    neither is set. Raises InvalidArgumentError (one line naming the file) if unusable."""
    env = os.environ if environ is None else environ
    secret = secret or env.get(ENV_SECRET) or None
    server = server or env.get(ENV_SERVER) or None
    if secret is None and server is None:
        return None
    if secret is None or server is None:
        raise InvalidArgumentError(
            "CURVE needs both curve_secret (this client's NAME.key_secret) and curve_server "
            f"(the daemon's server.key or its z85 text); env {ENV_SECRET} / {ENV_SERVER}")
    public, sec = _certificate(secret, "curve_secret")
    if sec is None:
        raise InvalidArgumentError(f"curve_secret {os.fspath(secret)}: holds no secret key "
                                   "(give the NAME.key_secret file, not NAME.key)")
    return CurveKeys(public, sec, server_key(server))


def verdict(endpoint: str, event: int, value: int, curve: bool) -> NotAllowedError | None:
    """The error a monitor event means for a request, or None if it means no failure."""
    if not event & _FAILED:
        return None
    data = {"endpoint": endpoint, "event": event, "value": value}
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        why = f"it refused this client's CURVE key (ZAP status {value})"
    elif not curve:
        why = "it requires CURVE keys and this client has none (curve_secret, curve_server)"
    elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        why = f"the CURVE handshake failed (protocol error {value:#x}); does it use CURVE?"
    else:
        why = "the CURVE handshake failed: the wrong server key (curve_server), or a refused key"
    return NotAllowedError(f"{endpoint}: key not allowed: {why}", data)


class HandshakeMonitor:
    """The monitor of one client socket: reports a failed handshake as NotAllowedError."""

    def __init__(self, sock: Any, endpoint: str, curve: bool) -> None:
        self.sock, self.endpoint, self.curve = sock, endpoint, curve
        addr = f"inproc://flowd-client-handshake-{os.getpid()}-{next(_ids)}"
        sock.monitor(addr, _FAILED)
        self.mon = sock.context.socket(zmq.PAIR)
        self.mon.setsockopt(zmq.LINGER, 0)
        self.mon.connect(addr)

    def _error(self, frames: list[bytes]) -> NotAllowedError | None:
        # imported here: zmq.utils.monitor pulls in asyncio (30 ms of every start)
        from zmq.utils.monitor import parse_monitor_message

        msg = parse_monitor_message(frames)
        return verdict(self.endpoint, msg["event"], msg["value"], self.curve)

    def check(self) -> None:
        """Raise NotAllowedError if a handshake failed since the last check (sync sockets)."""
        while True:
            try:
                frames = self.mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            exc = self._error(frames)
            if exc is not None:
                raise exc

    async def follow(self, fail: Callable[[NotAllowedError], None]) -> None:
        """Call ``fail`` on every failed handshake (asyncio sockets; run as a task)."""
        while True:
            exc = self._error(await self.mon.recv_multipart())
            if exc is not None:
                fail(exc)

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.mon.close(0)


def prepare(sock: Any, endpoint: str, keys: CurveKeys | None) -> HandshakeMonitor | None:
    """Where a driver creates its request socket (before connect): on tcp, the CURVE
    options if it has keys and a monitor of the handshake either way."""
    if not endpoint.startswith("tcp://"):
        return None
    if keys is not None:
        keys.apply(sock)
    return HandshakeMonitor(sock, endpoint, keys is not None)


def apply_to_subscriber(sock: Any, endpoint: str, keys: CurveKeys | None) -> None:
    """A change-feed socket on tcp uses the same keys (the daemon's PUB is CURVE too)."""
    if keys is not None and endpoint.startswith("tcp://"):
        keys.apply(sock)


def wait_reply(sock: zmq.Socket, monitor: HandshakeMonitor | None, seconds: float) -> bool:
    """True once ``sock`` has a reply within ``seconds``; NotAllowedError if the
    handshake fails meanwhile (sync driver)."""
    if monitor is None:
        return bool(sock.poll(max(1, int(seconds * 1000))))
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor.mon, zmq.POLLIN)
    ready = dict(poller.poll(max(1, int(seconds * 1000))))
    monitor.check()
    return sock in ready


def events_endpoint(request_endpoint: str | None, events: str) -> str:
    """The change-feed endpoint a daemon's hello names, as this host reaches it: a
    wildcard bind address (tcp://0.0.0.0:P, tcp://*:P) becomes the request host."""
    if not (request_endpoint or "").startswith("tcp://") or not events.startswith("tcp://"):
        return events
    host, _, port = events[len("tcp://"):].rpartition(":")
    if host not in ("*", "0.0.0.0", "[::]", "::"):
        return events
    request_host = request_endpoint[len("tcp://"):].rpartition(":")[0]  # type: ignore[index]
    return f"tcp://{request_host}:{port}"


def certificate_text(public: bytes, secret: bytes | None = None) -> bytes:
    """A key file in zmq.auth's certificate format (``zmq.auth.load_certificate`` reads it):
    the public half alone (NAME.key) or both halves (NAME.key_secret)."""
    kind = "Secret" if secret is not None else "Public"
    lines = [f"#   ZeroMQ CURVE **{kind}** Certificate (flowd)", "", "metadata", "curve",
             f'    public-key = "{public.decode("ascii")}"']
    if secret is not None:
        lines.insert(1, "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.")
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return ("\n".join(lines) + "\n").encode("ascii")
