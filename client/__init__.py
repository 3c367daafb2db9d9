"""flowd_client: what tools import to talk to flowd. Never imports the daemon."""

from .aio import AsyncFlowClient
from .client import FlowClient
from .errors import (
    CompactedError,
    ConflictError,
    FlowdError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ProtocolError,
    TooLargeError,
    UnavailableError,
    UnknownOpError,
    UnsupportedVersionError,
)
from .model import Change, Flow

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
    "NotFoundError",
    "ProtocolError",
    "TooLargeError",
    "UnavailableError",
    "UnknownOpError",
    "UnsupportedVersionError",
]
