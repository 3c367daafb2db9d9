"""``AsyncFlowClient``: the same API as coroutines, on zmq.asyncio.

The methods are the very generators of :mod:`flowd_client.api`; only the
driver differs. One DEALER socket carries many requests in flight at once
(pipelining): a reader task matches replies to waiting futures by id. A
request that times out is sent again with the same id and idempotency key
(the socket reconnects underneath), within its one deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import zmq
import zmq.asyncio

from . import curve, protocol
from .api import BatchBuilder, FlowAPI, Steps
from .client import autostart_default, poll_ms
from .connection import Endpoints, check_size, limit_of
from .errors import NotAllowedError, error_from_wire
from .feed import Sequencer, configure_subscriber, decode_event
from .model import Change


class AsyncFlowClient(FlowAPI):
    """Use from one event loop: ``await c.add_flow(...)``, ``async for ch in c.watch()``."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None,
                 endpoint: str | None = None, timeout: float = 5.0, *,
                 autostart: bool | None = None, retries: int = 2,
                 curve_secret: str | os.PathLike[str] | None = None,
                 curve_server: str | os.PathLike[str] | None = None) -> None:
        if autostart is None:
            autostart = autostart_default(endpoint)
        self._endpoints = Endpoints(endpoint, data_dir, autostart)
        self._endpoints.curve = curve.load_keys(curve_secret, curve_server)
        self._handshake: curve.HandshakeMonitor | None = None
        self._handshake_task: asyncio.Task[None] | None = None
        self.timeout = timeout
        self.retries = retries
        self.client_id = secrets.token_hex(8)
        self._ctx = zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        #: the daemon's request limit, from hello (one connection for the client's life)
        self._limit: int | None = None

    async def _drive(self, steps: Steps) -> Any:
        try:
            call = next(steps)
            while True:
                result = await self._request(call.op, call.args, call.write)
                call = steps.send(result)
        except StopIteration as done:
            return done.value

    async def _socket(self, deadline: float) -> zmq.asyncio.Socket:
        if self._sock is None:
            # resolve may wait for a daemon that is still loading: not on the event loop
            endpoint = await asyncio.to_thread(self._endpoints.resolve, deadline)
            if self._sock is not None:  # another request connected meanwhile
                return self._sock
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REPLY_BYTES)
            self._handshake = curve.prepare(sock, endpoint, self._endpoints.curve)
            sock.connect(endpoint)
            self._sock, self._endpoint = sock, endpoint
            loop = asyncio.get_running_loop()
            self._reader = loop.create_task(self._read_replies(sock))
            if self._handshake is not None:
                self._handshake_task = loop.create_task(
                    self._handshake.follow(self._handshake_failed))
        return self._sock

    def _handshake_failed(self, exc: NotAllowedError) -> None:
        """Every request waiting on this connection fails at once (not at its timeout)."""
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(exc)

    async def _read_replies(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            msg = protocol.unpack(await sock.recv(), protocol.MAX_REPLY_BYTES)
            fut = self._waiting.pop(msg.get("id"), None) if isinstance(msg, dict) else None
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def _request(self, op: str, args: dict[str, Any], write: bool) -> Any:
        key = (self.client_id, next(self._seq)) if write else None
        rid = next(self._ids)
        frame = protocol.build_request(rid, op, args, key)
        deadline = time.monotonic() + self.timeout
        if len(frame) > protocol.MIN_REQUEST_LIMIT:
            check_size(op, len(frame), await self._daemon_limit(deadline))
        return await self._attempts(rid, frame, deadline)

    async def _daemon_limit(self, deadline: float) -> int:
        """The limit from the daemon's hello, asked once per connection (as the sync client)."""
        if self._limit is None:
            rid = next(self._ids)
            self._limit = limit_of(await self._attempts(rid, protocol.hello_request(rid),
                                                        deadline))
        return self._limit

    async def _attempts(self, rid: int, frame: bytes, deadline: float) -> Any:
        attempts = self.retries + 1
        for attempt in range(attempts):
            sock = await self._socket(deadline)
            fut = asyncio.get_running_loop().create_future()
            self._waiting[rid] = fut
            await sock.send(frame)
            wait = (deadline - time.monotonic()) / (attempts - attempt)
            try:
                msg = await asyncio.wait_for(fut, max(wait, 0.001))
            except NotAllowedError:
                self._waiting.pop(rid, None)
                raise
            except TimeoutError:
                self._waiting.pop(rid, None)
                if self._endpoints.daemon_down():
                    break
                continue
            if "error" in msg:
                raise error_from_wire(msg["error"])
            return msg.get("result")
        raise self._endpoints.no_answer(getattr(self, "_endpoint", self._endpoints.explicit),
                                        self.timeout)

    async def current_flow_id(self) -> str | None:
        return await self.get_current_flow_id()

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[BatchBuilder]:
        builder = BatchBuilder()
        yield builder
        if builder.ops:
            builder.results = await self.commit_batch(builder.ops)

    async def events_endpoint(self) -> str:
        if self._endpoints.events is None:
            self._endpoints.events = curve.events_endpoint(self._endpoints.explicit,
                                                           (await self.hello())["events"])
        return self._endpoints.events

    async def watch(self, since: int | None = None,
                    timeout: float | None = None) -> AsyncIterator[Change]:
        """As FlowClient.watch: in order, no gap, no repeat; CompactedError if too old."""
        sub = configure_subscriber(self._ctx.socket(zmq.SUB), await self.events_endpoint(),
                                   self._endpoints.curve)
        try:
            if since is None:
                since = (await self.ping())["revision"]
            seq = Sequencer(since)
            for change in await self.catch_up(seq):
                yield change
            idle_since = time.monotonic()
            while True:
                if not await sub.poll(poll_ms(idle_since, timeout)):
                    for change in await self.catch_up(seq):
                        yield change
                    if timeout is not None and time.monotonic() - idle_since >= timeout:
                        return
                    continue
                event = decode_event(await sub.recv_multipart())
                if event is None:
                    continue
                out = seq.accept(event)
                for change in (await self.catch_up(seq) if out is None else out):
                    yield change
                idle_since = time.monotonic()
        finally:
            sub.close(0)

    async def close(self) -> None:
        for task in (self._reader, self._handshake_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
                    await task
        if self._handshake is not None:
            self._handshake.close()
        for fut in self._waiting.values():
            fut.cancel()
        if self._sock is not None:
            self._sock.close(0)
        self._ctx.term()

    async def __aenter__(self) -> AsyncFlowClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
