"""The rules of flowd's settings that involve more than one setting or the file system.

flowd.config reads each setting on its own (flowd.config_values converts and checks
one value); what only holds for a combination is checked here, once the whole
Config is built, so each rule names every source it read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config_values import is_loopback, split_tcp

if TYPE_CHECKING:
    from .config import Config


class ConfigError(ValueError):
    """A setting is invalid; the message names the setting and its source."""


def check_rules(config: Config) -> None:
    """Rules that involve more than one setting or the file system."""
    _check_data_dir(config)
    for name in ("endpoint", "events_endpoint"):
        value = getattr(config, name)
        if value is None or not value.startswith("tcp://"):
            continue
        host, _ = split_tcp(value)
        if config.curve_dir is None and not is_loopback(host.strip("[]")):
            raise ConfigError(
                f"invalid {name} from {config.sources[name]}: {value!r} is not a loopback "
                "address (127.0.0.0/8, ::1, localhost); flowd serves this machine only "
                "unless --curve-dir authenticates peers")
    if config.backend == "etcd":
        _check_etcd(config)
    if config.endpoint is not None and config.endpoint == config.events_endpoint:
        raise ConfigError(f"invalid events_endpoint from {config.sources['events_endpoint']}: "
                          f"same as endpoint ({config.endpoint})")


def _check_etcd(config: Config) -> None:
    """TLS files go together and with https:// endpoints (flowd.etcd_endpoints' rules)."""
    from .etcd_endpoints import check_options  # pure: no grpc

    tls = config.etcd_cacert is not None or config.etcd_cert is not None
    try:
        check_options(config.etcd_endpoints, 1.0,
                      None if config.etcd_cert is None else str(config.etcd_cert),
                      None if config.etcd_key is None else str(config.etcd_key), tls=tls)
    except ValueError as exc:
        names = ("etcd_endpoints", "etcd_cacert", "etcd_cert", "etcd_key")
        where = ", ".join(f"{n} from {config.sources[n]}" for n in names
                          if config.sources.get(n, "default") != "default")
        raise ConfigError(f"invalid etcd settings ({where}): {exc}") from None


def _check_data_dir(config: Config) -> None:
    """A data dir path through a regular file can never be opened: say so as a
    configuration error (exit 2) before anything tries to create it."""
    for path in (config.data_dir, *config.data_dir.parents):
        if path.exists():
            if not path.is_dir():
                what = "is" if path == config.data_dir else f"is under {path}, which is"
                raise ConfigError(f"invalid data_dir from {config.sources['data_dir']}: "
                                  f"{config.data_dir} {what} not a directory")
            return
