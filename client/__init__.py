"""flowd_client: what tools import to talk to flowd. Never imports the daemon.

The clients are imported on first use (PEP 562), so the daemon, which only
needs the protocol and the error table, does not pay for zmq.asyncio.
"""

from typing import TYPE_CHECKING, Any

from .errors import (
    CompactedError,
    ConflictError,
    FlowdError,
    InternalError,
    InvalidArgumentError,
    NotAllowedError,
    NotFoundError,
    ProtocolError,
    TooLargeError,
    UnavailableError,
    UnknownOpError,
    UnsupportedVersionError,
    UntrustedError,
)
from .model import Change, Flow

if TYPE_CHECKING:
    from .aio import AsyncFlowClient
    from .client import FlowClient

__version__ = "0.1.0"

__all__ = [
    "AsyncFlowClient",
    "Change",
    "Flow",
    "FlowClient",
    "CompactedError",
    "ConflictError",
    "FlowdError",
    "InternalError",
    "InvalidArgumentError",
    "NotAllowedError",
    "NotFoundError",
    "ProtocolError",
    "TooLargeError",
    "UnavailableError",
    "UnknownOpError",
    "UnsupportedVersionError",
    "UntrustedError",
]


def __getattr__(name: str) -> Any:
    if name == "FlowClient":
        from .client import FlowClient

        return FlowClient
    if name == "AsyncFlowClient":
        from .aio import AsyncFlowClient

        return AsyncFlowClient
    raise AttributeError(f"module 'flowd_client' has no attribute {name!r}")
