"""``AsyncFlowClient``: the same API as coroutines, on zmq.asyncio.

The methods are the very generators of :mod:`flowd_client.api`, and what a
request is and what its reply means is :mod:`flowd_client.request_core`, as
in the sync client; only the socket loop differs. One DEALER socket carries
many requests in flight at once (pipelining): a reader task hands each reply
to the waiting future the core matches it to. A request that times out is
sent again with the same id and idempotency key (the socket reconnects
underneath), within its one deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import zmq
import zmq.asyncio

from . import curve
from .api import BatchBuilder, FlowAPI, Steps
from .endpoints import Endpoints, autostart_default
from .errors import FlowdError, NotAllowedError
from .feed import CatchUp, Wait, follow
from .model import Change
from .request_core import Request, RequestCore
from .sockets import open_dealer, open_subscriber


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
        #: one connection for the client's life: the daemon's limit is asked once
        self._core = RequestCore(timeout, retries)
        self.timeout = timeout
        self._ctx = zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket | None = None
        self._endpoint: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def _drive(self, steps: Steps) -> Any:
        try:
            call = next(steps)
            while True:
                try:
                    result = await self._request(call.op, call.args, call.write)
                except FlowdError as exc:  # the steps may answer a refusal
                    call = steps.throw(exc)
                    continue
                call = steps.send(result)
        except StopIteration as done:
            return done.value

    async def _socket(self, deadline: float) -> zmq.asyncio.Socket:
        if self._sock is None:
            # resolve may wait for a daemon that is still loading: not on the event loop
            endpoint = await asyncio.to_thread(self._endpoints.resolve, deadline)
            if self._sock is not None:  # another request connected meanwhile
                return self._sock
            sock, self._handshake = open_dealer(self._ctx, endpoint, self._endpoints.curve)
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
            frame = await sock.recv()
            try:
                msg = self._core.decode(frame)
            except FlowdError:
                continue  # not a reply any request could own
            rid = self._core.match(msg, self._waiting)
            fut = self._waiting.pop(rid, None) if rid is not None else None
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def _request(self, op: str, args: dict[str, Any], write: bool) -> Any:
        req = self._core.request(op, args, write, self.timeout)
        if self._core.needs_limit(req):
            self._core.learn_limit(await self._exchange(self._core.hello(req)))
        self._core.check_size(req)
        return await self._exchange(req)

    async def _exchange(self, req: Request) -> Any:
        """Send and await the reply; a timed-out attempt is sent again on the same socket
        (ZeroMQ reconnects underneath; other requests may be in flight on it)."""
        for attempt in self._core.attempts():
            sock = await self._socket(req.deadline)
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._waiting[req.rid] = fut
            await sock.send(req.frame)
            wait = self._core.wait_until(req, attempt) - time.monotonic()
            try:
                msg = await asyncio.wait_for(fut, max(wait, 0.001))
            except NotAllowedError:
                self._waiting.pop(req.rid, None)
                raise
            except TimeoutError:
                self._waiting.pop(req.rid, None)
                if self._endpoints.daemon_down() or self._core.expired(req):
                    break
                continue
            return self._core.outcome(msg)[0]
        raise self._endpoints.no_answer(self._endpoint or self._endpoints.explicit,
                                        req.timeout)

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
        sub = open_subscriber(self._ctx, await self.events_endpoint(), self._endpoints.curve)
        try:
            if since is None:
                since = (await self.ping())["revision"]
            plan, reply = follow(since, timeout), None
            while True:
                try:
                    action = plan.send(reply)
                except StopIteration:
                    return
                if isinstance(action, Wait):
                    reply = await sub.recv_multipart() if await sub.poll(action.ms) else None
                elif isinstance(action, CatchUp):
                    reply = await self.catch_up(action.seq)
                else:
                    reply = None
                    for change in action.changes:
                        yield change
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
