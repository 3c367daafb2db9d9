"""The loop: the only socket code in the daemon.

ROUTER for requests, PUB for changes, a wake-up socketpair for signals and the
snapshot thread. Each turn drains every ready request (bounded), lets the
service group-commit the writes with one fsync, sends the replies, publishes
the events, then runs the timers.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import zmq
from flowd_client.protocol import socket_limit

from .notify import watchdog_interval
from .runtime import Runtime
from .service import refused_log

log = logging.getLogger("flowd.server")

MAX_DRAIN = 1024
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
STRAY_CHECK_SECONDS = 1.0
STATUS_SECONDS = 5.0


def ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://"):]) if endpoint.startswith("ipc://") else None


class Server:
    def __init__(self, rt: Runtime, notifier: Any = None) -> None:
        self.rt = rt
        self.notifier = notifier
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        # a bit above the limit: a modestly oversized request gets a TOO_LARGE reply
        self.router.setsockopt(zmq.MAXMSGSIZE, socket_limit(rt.max_request_bytes))
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDHWM, 100_000)
        self.router.setsockopt(zmq.RCVHWM, 100_000)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 10_000)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.wake_r, self.wake_w = socket.socketpair()
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        self.stopping = False
        self.reload_requested = False
        self.on_reload: Callable[[], None] | None = None
        self.timers: dict[str, float] = {}
        self.watchdog_every = watchdog_interval()

    # ------------------------------------------------------------ set-up

    def bind(self) -> None:
        for sock, endpoint in ((self.router, self.rt.endpoint), (self.pub, self.rt.events)):
            path = ipc_path(endpoint)
            if path is not None:
                path.unlink(missing_ok=True)
            sock.bind(endpoint)
            if path is not None:
                os.chmod(path, 0o600)

    def wake(self) -> None:
        try:
            self.wake_w.send(b"\0")
        except OSError:
            pass  # the pipe is full: the loop is awake anyway

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _on_hup(self, signum: int, frame: Any) -> None:
        self.reload_requested = True

    # ------------------------------------------------------------ loop

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.wake_r.fileno(), zmq.POLLIN)
        watch = self.rt.watch.fileno() if self.rt.watch is not None else None
        if watch is not None:  # flows.json rewritten by an old tool: merge it at once
            poller.register(watch, zmq.POLLIN)
        self.rt.snap.on_done = self.wake
        if self.notifier is not None:
            self.notifier.ready()
            self._status()
        log.info("ready: %d flows at revision %d, serving %s", len(self.rt.store),
                 self.rt.store.revision, self.rt.endpoint)
        service, snap = self.rt.service, self.rt.snap
        self.timers["snapshot-summary"] = time.monotonic() + 60.0
        next_tick = 0.0
        while not self.stopping:
            timeout = max(0, int((next_tick - time.monotonic()) * 1000) + 1)
            ready = dict(poller.poll(timeout))
            if self.wake_r.fileno() in ready:
                self._drain_wake()
                next_tick = 0.0  # a snapshot finished or a signal came: look at timers now
            if self.router in ready:
                self._drain_requests()
            if service.pending:
                self._send(service.commit())
                deadline = snap.next_deadline(time.monotonic())
                if deadline is not None and deadline < next_tick:
                    next_tick = deadline
            if watch in ready:
                self.rt.on_dir_event()
            if service.events:
                self._publish()
            if service.save_waiters:
                next_tick = 0.0
            now = time.monotonic()
            if now >= next_tick:
                try:
                    self._tick(now)
                    next_tick = self._next_tick(now)
                except Exception:  # a timer's failure must not take the requests down
                    log.exception("timer work failed; retrying in a second")
                    next_tick = now + 1.0
        self._shutdown()

    def _drain_wake(self) -> None:
        try:
            while self.wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        if self.reload_requested:
            self.reload_requested = False
            if self.on_reload is not None:
                self.on_reload()

    def _drain_requests(self) -> None:
        service = self.rt.service
        router = self.router
        for _ in range(MAX_DRAIN):
            if not router.getsockopt(_EVENTS) & _POLLIN:  # plain ints: enums cost µs here
                return
            frames = router.recv_multipart(zmq.NOBLOCK)
            if len(frames) < 2 or len(frames) > 3 or (len(frames) == 3 and frames[1]):
                continue  # not a DEALER/REQ envelope: nothing sane to answer
            self._send(service.handle(tuple(frames[:-1]), frames[-1]))

    def _send(self, out: list[tuple[tuple[bytes, ...], bytes]]) -> None:
        for envelope, reply in out:
            try:
                self.router.send_multipart([*envelope, reply], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # peer gone or over its high-water mark: it will time out and retry

    def _publish(self) -> None:
        for event in self.rt.service.take_events():
            try:
                self.pub.send_multipart([b"rev", msgpack.packb(event)], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    # ------------------------------------------------------------ timers

    def _due(self, name: str, now: float, every: float) -> bool:
        if now >= self.timers.get(name, 0.0):
            self.timers[name] = now + every
            return True
        return False

    def _tick(self, now: float) -> None:
        rt = self.rt
        self._send(rt.collect_snapshot())
        if self._due("stray", now, STRAY_CHECK_SECONDS):
            rt.check_stray()
        rt.maybe_snapshot(now)
        if rt.journal.durability == "relaxed" and self._due("fsync", now, 1.0):
            rt.sync_journal()
        if self._due("log-flush", now, 10.0):
            refused_log.flush()  # report how many refusals the rate limit swallowed
        if self._due("snapshot-summary", now, 60.0):
            line = rt.snap.stats.summary()
            if line:
                log.info("last minute: %s", line)
        if self.notifier is not None:
            interval = self.watchdog_every
            if interval and self._due("watchdog", now, interval):
                self.notifier.watchdog()
            if self._due("status", now, STATUS_SECONDS):
                self._status()
        self._publish()

    def _next_tick(self, now: float) -> float:
        deadlines = list(self.timers.values())
        snap = self.rt.snap.next_deadline(now)
        if snap is not None:
            deadlines.append(snap)
        return min(deadlines, default=now + 1.0)

    def _status(self) -> None:
        if self.notifier is not None:
            s = self.rt.store
            self.notifier.status(f"{len(s)} flows, revision {s.revision}, "
                                 f"flows.json at {self.rt.snap.installed_rev}")

    # ------------------------------------------------------------ stop

    def _shutdown(self) -> None:
        log.info("stopping: no new requests; writing the final snapshot")
        if self.notifier is not None:
            self.notifier.stopping()
        self._send(self.rt.service.commit())
        self._publish()
        self.router.close(0)
        self.pub.close(0)
        for endpoint in (self.rt.endpoint, self.rt.events):
            path = ipc_path(endpoint)
            if path is not None:
                path.unlink(missing_ok=True)
        self.ctx.term()
        signal.set_wakeup_fd(-1)
        self.wake_r.close()
        self.wake_w.close()
