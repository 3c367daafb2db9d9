"""flowd: the daemon that owns the shared store of flows."""

from flowd_client import __version__  # the one version of the distribution

__all__ = ["__version__"]
