"""The loop: the only socket code in the daemon (with flowd.listen, its endpoints,
and flowd.connections, which counts its connections against the open-file limit).

ROUTER for requests, PUB for changes, a wake-up socketpair for signals and the
snapshot thread; with --curve-dir, a ZAP handler (inproc REP, answered by this
loop from the allow-list, flowd.curve_keys) and CURVE on the tcp sockets.
Each turn drains every ready request (bounded), lets the service group-commit
the writes with one fsync, sends the replies, publishes the events, then runs
the timers.

What a peer that never reads can make the daemon hold is bounded in bytes:
ZeroMQ counts its queues in messages, so a message of n bytes is sent as
n // QUEUE_SLOT_BYTES padding messages (one byte each, which clients ignore)
and then itself, and the high-water marks are the byte bounds in slots. A
peer over its bound loses the reply (ROUTER_MANDATORY tells us; it is
counted) and retries; a watcher over its bound sees a gap and refills from
the history.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import zmq
import zmq.backend
from flowd_client import protocol
from flowd_client.errors import NotAllowedError
from flowd_client.protocol import socket_limit

from .connections import Connections
from .curve_keys import ZAP_DOMAIN
from .curve_keys import refused_log as handshake_log
from .daemon import Daemon
from .limits import QUEUE_SLOT_BYTES
from .listen import Listeners, answer_zap, open_zap, user_id
from .logsetup import RateLimitedLogger
from .notify import Notifier, watchdog_interval
from .pending import Out
from .request_handler import refused_log
from .timers import RETRY_SECONDS, Timers

log = logging.getLogger("flowd.loop")
rebind_log = RateLimitedLogger(log, interval=10.0, burst=1)

MAX_DRAIN = 1024
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
#: plain ints for send and recv flags: pyzmq's enums cost µs a frame on this path
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = _NOBLOCK | int(zmq.SNDMORE)
#: the compiled send, without the Python wrapper pyzmq puts around it (µs a reply)
_send = zmq.backend.Socket.send
#: frames of a request beyond which a message is read and dropped, never kept
MAX_FRAMES = 3
BACKLOG = 32
#: GIL switch interval (Python's: 5 ms, waited at each blocking call of a request)
SWITCH_INTERVAL = 0.001
#: a reply padding: an empty msgpack map (no id), which clients drop as a stray reply
PAD = b"\x80"


def recv_request(recv: Callable[..., Any]) -> tuple[bytes, ...] | None:
    """One waiting message's frames, or None if it is not a DEALER/REQ envelope (nothing
    sane to answer); zmq.Again if none waits. Frames come as zmq.Frame, whose ``more``
    is read in C: getsockopt(RCVMORE) looks its option up through an enum (µs a call).
    A message's frames arrive together, so only the first receive can raise Again."""
    part = recv(_NOBLOCK, copy=False)
    frames, count = [part.bytes], 1
    while part.more:
        part = recv(_NOBLOCK, copy=False)
        count += 1
        if count <= MAX_FRAMES:
            frames.append(part.bytes)
    if count < 2 or count > MAX_FRAMES or (count == 3 and frames[1]):
        return None
    return tuple(frames)


class Loop:
    def __init__(self, rt: Daemon, notifier: Notifier | None = None) -> None:
        self.rt = rt
        self.notifier = notifier
        self.ctx = zmq.Context()
        limits = rt.limits
        self.reply_slots = limits.slots(limits.peer_queue_bytes)
        self.event_slots = limits.slots(limits.subscriber_queue_bytes)
        self.router = self.ctx.socket(zmq.ROUTER)
        # a bit above the limit: a modestly oversized request gets a TOO_LARGE reply
        self.router.setsockopt(zmq.MAXMSGSIZE, socket_limit(rt.config.max_request_bytes))
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDHWM, self.reply_slots)
        # requests are read at once; this only bounds what a fast sender queues meanwhile
        self.router.setsockopt(zmq.RCVHWM,
                               max(4, limits.peer_queue_bytes // rt.config.max_request_bytes))
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full peer raises: counted
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, self.event_slots)
        self.pub.setsockopt(zmq.LINGER, 0)
        for sock in (self.router, self.pub):
            sock.setsockopt(zmq.BACKLOG, BACKLOG)
        #: with --curve-dir: the ZAP handler this loop answers (CURVE on the tcp sockets)
        self.zap = None if rt.curve_keys is None else open_zap(
            self.ctx, ((self.router, rt.endpoint), (self.pub, rt.events)),
            rt.curve_keys.secret, ZAP_DOMAIN)
        #: requests carry a User-Id to check against the allow-list in force
        self.curve_router = self.zap is not None and rt.endpoint.startswith("tcp://")
        self.listeners = Listeners(self.ctx, rt.socket_gid)
        self.conns = Connections(self.ctx, (self.router, self.pub), self.listeners,
                                 rt.endpoint)
        self.replies_dropped = 0
        rt.service.server_stats = self.queue_stats
        self.wake_r, self.wake_w = socket.socketpair()
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        self.stopping = False
        self.reload_requested = False
        self.on_reload: Callable[[], None] | None = None
        self.watchdog_every = watchdog_interval()
        self.timers = Timers(time.monotonic(), relaxed=rt.journal.durability == "relaxed",
                             notify=notifier is not None, watchdog_every=self.watchdog_every,
                             work_deadline=rt.next_deadline)
        self._jobs = self._job_table()

    # ------------------------------------------------------------ set-up

    def bind(self) -> None:
        """Raises EndpointBusy or EndpointRefused (flowd.listen) naming the endpoint."""
        for sock, endpoint in ((self.router, self.rt.endpoint), (self.pub, self.rt.events)):
            self.listeners.bind(sock, endpoint)
        self.conns.drain()

    def queue_stats(self) -> dict[str, Any]:
        return {"peer_queue_slots": self.reply_slots, "subscriber_queue_slots":
                self.event_slots, "queue_slot_bytes": QUEUE_SLOT_BYTES,
                "replies_dropped": self.replies_dropped, "fds": self.conns.guard.as_dict(),
                "sockets_rebound": self.listeners.rebinds}

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

    def _poller(self) -> zmq.Poller:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.wake_r.fileno(), zmq.POLLIN)
        for fd in self.conns.fds:
            poller.register(fd, zmq.POLLIN)
        watch = self.rt.watch.fileno() if self.rt.watch is not None else None
        if watch is not None:  # flows.json rewritten by an old tool: merge it at once
            poller.register(watch, zmq.POLLIN)
        if self.zap is not None:
            poller.register(self.zap, zmq.POLLIN)
        if self.rt.clients_watch is not None:  # a key allowed or revoked: reload at once
            poller.register(self.rt.clients_watch.fileno(), zmq.POLLIN)
        return poller

    def run(self) -> None:
        poller = self._poller()
        watch = self.rt.watch.fileno() if self.rt.watch is not None else None
        keys = self.rt.clients_watch.fileno() if self.rt.clients_watch is not None else None
        self.rt.snap.on_done = self.wake
        self.rt.strays.on_ready = self.wake  # a child parsed a tool's file (flowd.stray_parse)
        if hasattr(self.rt.backend, "wake"):  # etcd: the watch thread has other hosts' writes
            self.rt.backend.wake = self.wake
            self.wake()  # what it queued before now
        if self.notifier is not None:
            self.notifier.ready()
            self._status()
        log.info("ready: %d flows at revision %d, serving %s", len(self.rt.store),
                 self.rt.store.revision, self.rt.endpoint)
        service, snap, next_tick = self.rt.service, self.rt.snap, 0.0
        sys.setswitchinterval(SWITCH_INTERVAL)
        while not self.stopping:
            timeout = max(0, int((next_tick - time.monotonic()) * 1000) + 1)
            ready = dict(poller.poll(timeout))
            if self.wake_r.fileno() in ready:
                self._drain_wake()
                next_tick = 0.0  # a snapshot finished or a signal came: look at timers now
            if any(fd in ready for fd in self.conns.fds):
                self.conns.drain()
            if self.zap is not None:
                if keys in ready:  # before the handshakes: a revoked key is refused now
                    self.rt.on_clients_event()
                if self.zap in ready:
                    answer_zap(self.zap, self.rt.gate, MAX_DRAIN)
            if self.router in ready:
                (self._drain_curve_requests if self.curve_router else self._drain_requests)()
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
                    next_tick = self.timers.next_deadline(now)
                except Exception:  # a timer's failure must not take the requests down
                    log.exception("timer work failed; retrying in a second")
                    next_tick = now + RETRY_SECONDS
        self._shutdown()

    def _drain_wake(self) -> None:
        try:
            while self.wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self.rt.on_backend()
        if self.reload_requested:
            self.reload_requested = False
            if self.on_reload is not None:
                self.on_reload()
            self.rt.reload_allow_list()

    def _drain_requests(self) -> None:
        service, recv = self.rt.service, self.router.recv
        for _ in range(MAX_DRAIN):
            try:
                frames = recv_request(recv)
            except zmq.Again:
                return
            if frames is not None:
                self._send(service.handle(frames[:-1], frames[-1]))

    def _drain_curve_requests(self) -> None:
        """As _drain_requests, and each request's key (User-Id) must still be allowed."""
        service, router, gate = self.rt.service, self.router, self.rt.gate
        assert gate is not None
        for _ in range(MAX_DRAIN):
            if not cast(int, router.getsockopt(_EVENTS)) & _POLLIN:
                return
            frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            envelope = tuple(f.bytes for f in frames[:-1])
            if len(frames) < 2 or len(frames) > 3 or (len(frames) == 3 and envelope[1]):
                continue
            body, user = frames[-1].bytes, user_id(frames[-1])
            if gate.admit(user) is None:
                self._send(service.refuse(envelope, body, NotAllowedError(
                    f"key not allowed: {user} was revoked after it connected; nothing was done")))
                continue
            self._send(service.handle(envelope, body))

    def _send(self, out: Out) -> None:
        router, most = self.router, self.reply_slots // 2
        for envelope, reply in out:
            # a REQ peer (envelope with its empty delimiter) takes exactly one reply
            pads = min(len(reply) // QUEUE_SLOT_BYTES, most) if len(envelope) == 1 else 0
            try:
                for _ in range(pads):
                    router.send_multipart([*envelope, PAD], _NOBLOCK)
                for part in envelope:  # one frame at a time: send_multipart checks each
                    _send(router, part, _MORE)
                _send(router, reply, _NOBLOCK)
            except zmq.Again:
                self.replies_dropped += 1  # over its queue bound: it times out and retries
            except zmq.ZMQError:
                pass  # peer gone

    def _publish(self) -> None:
        pub, most = self.pub, self.event_slots // 2
        for event in self.rt.service.take_events():
            try:  # a PUB drops what a slow watcher's queue cannot take: it sees a gap
                for _ in range(min(len(event) // QUEUE_SLOT_BYTES, most)):
                    pub.send(protocol.EVENT_PAD_TOPIC, _NOBLOCK)
                topic, body = protocol.event_frames(event)
                _send(pub, topic, _MORE)
                _send(pub, body, _NOBLOCK)
            except zmq.ZMQError:
                pass

    # ------------------------------------------------------------ timers

    def _tick(self, now: float) -> None:
        rt = self.rt
        self._send(rt.collect_snapshot())
        for job in self.timers.due(now):
            self._jobs[job](now)
        self._publish()

    @staticmethod
    def _flush_logs() -> None:
        """Say how many lines the rate limits swallowed."""
        refused_log.flush()
        handshake_log.flush()

    def _job_table(self) -> dict[str, Callable[[float], None]]:
        """What each timer job of flowd.timers does."""
        rt = self.rt
        return {
            "stray": lambda now: rt.check_stray(),
            "stray-step": lambda now: rt.strays.step(),
            "names-index": lambda now: rt.index_names(),
            "own-files": lambda now: self._check_own_files(),
            "snapshot": rt.maybe_snapshot,
            "fsync": lambda now: rt.sync_journal(),
            "log-flush": lambda now: self._flush_logs(),
            "refusals": lambda now: rt.service.refusals.flush(),
            "snapshot-summary": lambda now: self._snapshot_summary(),
            "watchdog": lambda now: self._watchdog(),
            "status": lambda now: self._status(),
        }

    def _watchdog(self) -> None:
        if self.notifier is not None:
            self.notifier.watchdog()

    def _snapshot_summary(self) -> None:
        line = self.rt.snap.stats.summary()
        if line:
            log.info("last minute: %s", line)

    def _check_own_files(self) -> None:
        """flowd.lock and the socket files still flowd's? Put back what is not."""
        self.rt.check_lock()
        try:
            for note in self.listeners.check():
                log.warning("%s", note)
        except (OSError, zmq.ZMQError) as exc:
            rebind_log.error("rebind", "a socket file is not flowd's any more and could not be "
                         "bound again yet: %s", exc)
        if self.conns.guard.paused:
            self.conns.count()  # connections may have closed without an event we saw

    def _status(self) -> None:
        if self.notifier is not None:
            s, since = self.rt.store, self.rt.backend.describe().get("unavailable_since")
            away = f"; etcd unreachable since {since}, writes refused" if since else ""
            self.notifier.status(f"{len(s)} flows, revision {s.revision}, "
                                 f"flows.json at {self.rt.snap.installed_rev}{away}")

    # ------------------------------------------------------------ stop

    def _shutdown(self) -> None:
        log.info("stopping: no new requests; writing the final snapshot")
        if self.notifier is not None:
            self.notifier.stopping()
        self._send(self.rt.service.commit())
        self._publish()
        self.conns.close()
        for sock in (self.router, self.pub):
            sock.close(0)
        if self.zap is not None:
            self.zap.close(0)
        self.listeners.close()
        self.ctx.term()
        self.rt.strays.on_ready = None  # from here on a tool's file is merged in process
        self.rt.strays.cancel()
        signal.set_wakeup_fd(-1)
        self.wake_r.close()
        self.wake_w.close()
