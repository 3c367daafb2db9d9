"""One etcd watch stream on one member, as the adapter's watch follows it.

Part of the adapter (the only code that imports grpc and etcd3): every way a
stream ends becomes one of flowd's errors naming the member.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc
from etcd3 import etcdrpc
from etcd3.etcdrpc import kv_pb2
from flowd_client.errors import UnavailableError

from ..etcd_errors import error_for_status
from ..etcd_types import EventKind, WatchEvent
from ..etcd_watch import StreamMessage

if TYPE_CHECKING:
    from . import EtcdAdapter, _Endpoint

#: refuse to be served by a member cut off from the leader (a stale read or watch)
REQUIRE_LEADER = (("hasleader", "true"),)


def _request_stream(requests: queue.Queue[Any]) -> Iterator[Any]:
    while (item := requests.get()) is not None:
        yield item


def _event(e: Any) -> WatchEvent:
    kind: EventKind = "delete" if e.type == kv_pb2.Event.DELETE else "put"
    return WatchEvent(kind, e.kv.key, e.kv.value, e.kv.create_revision, e.kv.mod_revision,
                      e.kv.version)


class GrpcWatchStream:
    """One watch stream on one member; every way it ends is a FlowdError."""

    def __init__(self, adapter: EtcdAdapter, ep: _Endpoint, create: Any) -> None:
        self.endpoint = ep.url
        self._adapter, self._ep, self._closed = adapter, ep, False
        self._requests: queue.Queue[Any] = queue.Queue()
        self._requests.put(etcdrpc.WatchRequest(create_request=create))
        self._call = ep.watch.Watch(_request_stream(self._requests), metadata=REQUIRE_LEADER)

    def __iter__(self) -> GrpcWatchStream:
        return self

    def __next__(self) -> StreamMessage:
        try:
            resp = next(self._call)
            code, text = ("UNAVAILABLE", resp.cancel_reason or "watch canceled") if (
                resp.canceled and not resp.compact_revision) else ("", "")
        except StopIteration:
            code, text = "UNAVAILABLE", "watch stream ended"
        except grpc.RpcError as exc:
            code, text = exc.code().name, exc.details() or ""
        if self._closed:
            raise StopIteration
        if code:
            err = error_for_status(code, text, self.endpoint)
            if isinstance(err, UnavailableError):
                self._adapter._failed(self._ep, err)
            raise err
        return StreamMessage(resp.header.revision, tuple(_event(e) for e in resp.events),
                             resp.created, resp.compact_revision)

    def request_progress(self) -> None:
        self._requests.put(etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest()))

    def close(self) -> None:
        self._closed = True
        self._requests.put(None)
        self._call.cancel()
