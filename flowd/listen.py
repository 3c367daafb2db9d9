"""Where the daemon listens: its endpoints, bound safely and kept bound.

Part of the server layer (flowd.loop owns the loop and the sockets; this
owns their endpoints). libzmq unlinks whatever sits at an ipc path before it
binds, so flowd looks first: a live listener there is another daemon's
endpoint (EndpointBusy, exit 3, naming it); a link, FIFO, file or another
user's socket is refused (EndpointRefused, exit 2); only a stale socket of
flowd's own user is replaced. The socket file is born with its final mode
(0600, or 0660 for a socket group) and is never chmodded through a path.

While running, :meth:`Listeners.check` notices within a second that a socket
file was removed or replaced and binds it again (the old listener keeps the
connections it accepted, so no client loses a request). Near the open-file
limit, :meth:`Listeners.pause` hides the socket files so that no new
connection can arrive, while every accepted one is still served.

With --curve-dir, :func:`open_zap` binds the ZAP handler's socket and gives
every tcp socket CURVE before anything binds, so no peer ever reaches a tcp
endpoint unauthenticated (the loop answers the ZAP requests).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import msgpack
import zmq
from flowd_client import protocol

from .curve_keys import Gate
from .storage.evidence import keep_aside
from .storage.ownfiles import describe, user_name

log = logging.getLogger("flowd.listen")

PROBE_SECONDS = 1.0
#: where libzmq sends ZAP requests (RFC 27): one handler per context
ZAP_ENDPOINT = "inproc://zeromq.zap.01"


class EndpointBusy(Exception):
    """A live process listens on the endpoint: another daemon's, or another program's."""


class EndpointRefused(Exception):
    """Something that is not a stale socket of ours sits at the endpoint's path."""


def ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://"):]) if endpoint.startswith("ipc://") else None


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    """bind() creates the socket file with 0777 & ~umask: born with its final mode."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def ask_hello(ctx: zmq.Context, endpoint: str) -> dict | None:
    """The hello reply of whatever flowd listens at ``endpoint``, or None."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
    try:
        sock.connect(endpoint)
        sock.send(protocol.build_request(1, "hello", {"version": protocol.PROTOCOL_VERSION}))
        if not sock.poll(int(PROBE_SECONDS * 1000)):
            return None
        reply = msgpack.unpackb(sock.recv(), raw=False)
        result = reply.get("result") if isinstance(reply, dict) else None
        return result if isinstance(result, dict) else None
    except (zmq.ZMQError, ValueError, msgpack.UnpackException):
        return None
    finally:
        sock.close(0)


def use_curve(sock: zmq.Socket, secret: bytes, domain: bytes) -> None:
    """CURVE server options for a tcp socket, before it binds: every peer must pass the
    ZAP handler (enforced: with no handler bound, handshakes fail instead of passing)."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, domain)
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def open_zap(ctx: zmq.Context, sockets: Iterable[tuple[zmq.Socket, str]], secret: bytes,
             domain: bytes) -> zmq.Socket:
    """The ZAP handler's socket, bound before any tcp socket binds, and CURVE on every
    socket whose endpoint is tcp (ipc keeps its file permissions). The loop answers it."""
    zap = ctx.socket(zmq.REP)
    zap.setsockopt(zmq.LINGER, 0)
    zap.bind(ZAP_ENDPOINT)
    for sock, endpoint in sockets:
        if endpoint.startswith("tcp://"):
            use_curve(sock, secret, domain)
    return zap


def _listening(path: Path) -> bool:
    """True if a process accepts connections on the unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_SECONDS)
    try:
        probe.connect(os.fspath(path))
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False  # a stale socket file: nobody listens
    except OSError:
        return True  # EACCES, a timeout: someone's, and alive as far as we can tell
    finally:
        probe.close()


def _attrs(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_uid, st.st_gid, st.st_mode


@dataclass
class Endpoint:
    sock: zmq.Socket
    url: str
    path: Path | None
    #: (st_dev, st_ino) of the socket file flowd bound
    ident: tuple[int, int] | None = None
    #: (st_uid, st_gid, st_mode) it was bound with: a change means it is no longer flowd's
    attrs: tuple[int, int, int] | None = None
    #: while accepting is paused, the hidden name of the socket file
    hidden: Path | None = None


class Listeners:
    def __init__(self, ctx: zmq.Context, gid: int | None = None) -> None:
        self.ctx = ctx
        self.gid = gid
        self.items: list[Endpoint] = []
        self.rebinds = 0

    def holder(self, url: str) -> str:
        info = ask_hello(self.ctx, url)
        if info is None:
            return "another program (it does not answer flowd's hello)"
        return f"flowd pid {info.get('pid', '?')} for data dir {info.get('data_dir', '?')}"

    def bind(self, sock: zmq.Socket, url: str) -> None:
        """Bind ``url`` or raise EndpointBusy / EndpointRefused, naming what is there."""
        ep = Endpoint(sock, url, ipc_path(url))
        if ep.path is not None:
            self._clear_way(ep.path, url)
        try:
            self._bind(ep)
        except zmq.ZMQError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise EndpointBusy(f"{url} is in use by {self.holder(url)}") from None
            raise EndpointRefused(f"cannot listen on {url}: {exc.strerror}") from None
        self.items.append(ep)

    def _clear_way(self, path: Path, url: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise EndpointRefused(f"{path} is {describe(path)}, not a socket: flowd never "
                                  "binds over or through it; move it away and start again")
        if _listening(path):
            raise EndpointBusy(f"{url} is in use by {self.holder(url)}; give this daemon "
                               "another endpoint or data dir")
        if st.st_uid != os.geteuid():
            raise EndpointRefused(f"{path} is a stale socket of {user_name(st.st_uid)}: flowd "
                                  "does not remove another user's file; remove it yourself")

    def _bind(self, ep: Endpoint) -> None:
        mode = 0o600 if self.gid is None else 0o660
        with _umask(0o777 & ~mode):
            ep.sock.bind(ep.url)
        if ep.path is None:
            return
        st = os.lstat(ep.path)
        if self.gid is not None and st.st_gid != self.gid:  # (under systemd it is already)
            os.chown(ep.path, -1, self.gid, follow_symlinks=False)
            st = os.lstat(ep.path)
        ep.ident, ep.attrs = (st.st_dev, st.st_ino), _attrs(st)

    # ------------------------------------------------------------ while running

    def check(self) -> list[str]:
        """Bind again every socket file that was removed or replaced; what happened."""
        notes = []
        for ep in self.items:
            if ep.path is None or ep.hidden is not None:
                continue
            try:
                st = os.lstat(ep.path)
            except FileNotFoundError:
                st = None
            if st is not None and ((st.st_dev, st.st_ino), _attrs(st)) == (ep.ident, ep.attrs):
                continue
            notes.append(self._restore(ep, st))
        return notes

    def _restore(self, ep: Endpoint, st: os.stat_result | None) -> str:
        assert ep.path is not None
        what = "removed"
        if st is not None and (st.st_dev, st.st_ino) == ep.ident:
            what = f"given to {user_name(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}"
            os.unlink(ep.path)  # flowd's own socket file: its connections stay
        elif st is not None:
            mine = stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid()
            if mine and _listening(ep.path):
                who = self.holder(ep.url)
                if who.startswith("flowd"):  # never fight another daemon of ours for a path
                    return f"{ep.path} is now served by {who}; not taking it back"
            what = f"replaced by {describe(ep.path)}"
            what += f" (moved aside as {keep_aside(ep.path, 'foreign', move=True).name})"
        self._bind(ep)
        self.rebinds += 1
        return f"{ep.path} was {what}: bound it again"

    def pause(self) -> None:
        """Hide the socket files: new connections fail (clients retry), accepted ones stay."""
        for ep in self.items:
            if ep.path is not None and ep.hidden is None:
                hidden = ep.path.with_name(f".{ep.path.name}.paused")
                os.rename(ep.path, hidden)
                ep.hidden = hidden

    def resume(self) -> None:
        for ep in self.items:
            if ep.path is not None and ep.hidden is not None:
                os.rename(ep.hidden, ep.path)
                ep.hidden = None

    def close(self) -> None:
        """Remove the socket files flowd bound (only those: never a file someone put there)."""
        for ep in self.items:
            for path in (ep.hidden, ep.path):
                if path is None:
                    continue
                try:
                    st = os.lstat(path)
                    if (st.st_dev, st.st_ino) == ep.ident:
                        os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.error("could not remove the socket file %s: %s", path, exc.strerror)


def user_id(frame: zmq.Frame) -> str | None:
    """The key the ZAP handler gave this message's connection (None: no such property)."""
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return user if isinstance(user, str) else None


def answer_zap(zap: zmq.Socket, gate: Gate | None, most: int) -> None:
    """Answer the ZAP requests waiting on ``zap`` (at most ``most``) from the allow-list."""
    assert gate is not None
    for _ in range(most):
        if not cast(int, zap.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            return
        zap.send_multipart(gate.answer(zap.recv_multipart(zmq.NOBLOCK)))
