"""flowd: the daemon that owns the shared store of flows."""

__version__ = "0.1.0"
