"""flowd's settings: one Config built from the command line, FLOWD_* variables,
an optional TOML file and defaults, in that order of precedence.

Every value is checked (converters in ``flowd.config_values``) before the
daemon touches its data directory, so a typo fails fast with a message naming
the setting and where it came from (`--check-config` relies on this). Only
log_level can change while running; `reload_live` says which other changes
wait for a restart.
"""

from __future__ import annotations

import argparse
import difflib
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from flowd_client import __version__, discovery, exitcodes, protocol
from flowd_client.exitcodes import OneLineParser

from . import logsetup
from .config_rules import ConfigError, check_rules
from .config_values import (
    KiB,
    MiB,
    group_id,
    to_bool,
    to_choice,
    to_count,
    to_endpoint,
    to_etcd_endpoints,
    to_etcd_prefix,
    to_group,
    to_path,
    to_seconds,
    to_size,
)
from .limits import QUEUE_SLOT_BYTES

ENV_PREFIX = "FLOWD_"
CONFIG_ENV = "FLOWD_CONFIG"
DURABILITY_MODES = ("strict", "relaxed", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
BACKENDS = ("local", "etcd")
#: Settings `reload_live` applies to a running daemon; the rest need a restart.
RELOADABLE = frozenset({"log_level"})



def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The data dir when no layer sets one: the client's rule, minus FLOWD_DATA_DIR
    (the environment layer applies that, with its source)."""
    env = os.environ if environ is None else environ
    return discovery.default_data_dir({k: v for k, v in env.items() if k != "FLOWD_DATA_DIR"})


@dataclass(frozen=True)
class _Setting:
    """One row of the settings table. The env name and the option derive from the
    name, which is also the TOML key and the Config attribute."""

    name: str
    convert: Callable[[Any], Any]
    default: Any
    help: str
    default_text: str
    metavar: str | None = None
    is_path: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


def _row(default: Any, convert: Callable[[Any], Any], help: str, default_text: str,
         metavar: str | None = None, *, is_path: bool = False,
         factory: Callable[[], Any] | None = None) -> Any:
    """A Config field that is a setting: its default and its table row in one place."""
    meta = {"setting": (convert, default, help, default_text, metavar, is_path)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


T = TypeVar("T")


@dataclass
class Config:
    """The settings table (one field per setting: default, type, converter, help;
    the environment name and TOML key follow from the name), and the values of
    one daemon run. Paths are absolute; endpoints None mean "the daemon's
    default under data_dir". Components take their slice (:meth:`slice`) or
    single values from here in :class:`flowd.daemon.Daemon`, nowhere else."""

    data_dir: Path = _row(
        None, to_path,
        "directory that holds flows.json, the journal, flowd.lock and the default socket",
        "$XDG_STATE_HOME/flowd, else ~/.local/state/flowd", "DIR", is_path=True,
        factory=default_data_dir)
    endpoint: str | None = _row(
        None, to_endpoint,
        "request endpoint, ipc://PATH or tcp://HOST:PORT; tcp must be a loopback "
        "address (127.0.0.0/8, ::1, localhost) unless --curve-dir authenticates peers",
        "ipc://DATA_DIR/flowd.sock", "URL")
    events_endpoint: str | None = _row(
        None, to_endpoint, "change-feed (PUB) endpoint, same rules as --endpoint",
        "ipc://DATA_DIR/flowd-events.sock", "URL")
    durability: str = _row(
        "strict", to_choice(DURABILITY_MODES),
        "strict: a write is acknowledged only once fsynced (survives a power cut); "
        "relaxed: once handed to the OS, fsynced shortly after (survives a daemon "
        "crash); none: no fsync at all (tests and throwaway data)",
        "strict", "{strict,relaxed,none}")
    snapshot_interval: float = _row(
        1.0, to_seconds, "seconds changes may wait before flows.json is rewritten (float > 0)",
        "1.0", "SECONDS")
    snapshot_rate: int = _row(
        64 * MiB, to_size(0),
        "bytes a second a background snapshot writes at most, so that its flushes leave "
        "the disk to the journal's fsyncs (0: no limit; K/M/G suffixes; a forced save "
        "and shutdown are never held back)", "64M", "BYTES/S")
    journal_max_bytes: int = _row(
        64 * MiB, to_size(1),
        "journal size that forces a snapshot; accepts K/M/G suffixes (binary)", "64M", "BYTES")
    max_request_bytes: int = _row(
        16 * MiB, to_size(protocol.MIN_REQUEST_LIMIT),
        "largest request accepted; a bigger one gets a TOO_LARGE reply (far bigger "
        "frames, over 1/8 or 64K above it, drop the connection); clients learn it "
        "from hello (at least 1K; K/M/G suffixes)", "16M", "BYTES")
    history: int = _row(
        10000, to_count,
        "revisions kept in memory for the change feed (watchers further behind resync)",
        "10000", "N")
    history_bytes: int = _row(
        64 * MiB, to_size(0),
        "bytes the change-feed history may hold (packed events; oldest dropped first)",
        "64M", "BYTES")
    retry_keys_bytes: int = _row(
        32 * MiB, to_size(0),
        "bytes the retry-key window may hold (first replies of recent writes)", "32M", "BYTES")
    reply_page_bytes: int = _row(
        MiB, to_size(KiB),
        "a page of get_all_flows or history ends after about this many bytes "
        "(at least one entry)", "1M", "BYTES")
    peer_queue_bytes: int = _row(
        64 * MiB, to_size(QUEUE_SLOT_BYTES),
        "replies queued for one client that does not read them, at most (the rest "
        "are dropped; it retries); also the bound on requests queued from one client",
        "64M", "BYTES")
    subscriber_queue_bytes: int = _row(
        64 * MiB, to_size(QUEUE_SLOT_BYTES),
        "change events queued for one slow watcher, at most (it refills the rest "
        "from the history)", "64M", "BYTES")
    curve_dir: Path | None = _row(
        None, to_path,
        "CURVE keys for every tcp endpoint: DIR/server.key and server.key_secret (made "
        "0600 on first start), DIR/clients/NAME.key the allowed clients (reloaded on "
        "SIGHUP and when DIR/clients changes); then tcp may be any address",
        "none (tcp on loopback only)", "DIR", is_path=True)
    socket_group: str | None = _row(
        None, to_group,
        "group whose members may connect: sockets 0660 and data dir 0750 with that "
        "group (flowd's user must be a member); without it only flowd's own user (and "
        "root) can connect", "none", "GROUP")
    backend: str = _row(
        "local", to_choice(BACKENDS),
        "store of record: local (the journal and flows.json in the data dir) or etcd "
        "(an etcd v3 cluster that many hosts' flowd share; see --etcd-endpoints)",
        "local", "{local,etcd}")
    etcd_endpoints: tuple[str, ...] = _row(
        ("http://127.0.0.1:2379",), to_etcd_endpoints,
        "with --backend etcd: the cluster's client URLs, comma-separated "
        "(http:// or https://; any member will do, the others are tried on failure)",
        "http://127.0.0.1:2379", "URL[,URL...]")
    etcd_prefix: str = _row(
        "/flowd/default", to_etcd_prefix,
        "with --backend etcd: the key prefix of this store (hosts with the same prefix "
        "share their flows)", "/flowd/default", "PREFIX")
    etcd_cacert: Path | None = _row(
        None, to_path, "with --backend etcd: CA certificate (PEM) to verify the members",
        "system roots when an endpoint is https://", "FILE", is_path=True)
    etcd_cert: Path | None = _row(
        None, to_path, "with --backend etcd: client certificate (PEM), with --etcd-key",
        "none", "FILE", is_path=True)
    etcd_key: Path | None = _row(
        None, to_path, "with --backend etcd: the client certificate's key (PEM)",
        "none", "FILE", is_path=True)
    log_level: str = _row(
        "INFO", to_choice(LOG_LEVELS, upper=True),
        "log level; the one setting that SIGHUP applies without a restart",
        "INFO", "{DEBUG,INFO,WARNING,ERROR}")
    log_file: Path | None = _row(
        None, to_path, "append log lines to FILE (reopened on SIGHUP) instead of stderr",
        "stderr", "FILE", is_path=True)
    tracemalloc: bool = _row(
        False, to_bool,
        "trace Python allocations so stats can report memory hot spots (slower)", "off")
    check_config: bool = False
    config_file: Path | None = None
    #: setting name -> where its value came from, e.g. "environment (FLOWD_DURABILITY)".
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """Every setting (plus config_file) as JSON-able values, for
        `--check-config` output and the stats op."""
        out: dict[str, Any] = {}
        for name in (*SETTING_NAMES, "config_file"):
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, Path) else value
        return out

    def slice(self, cls: type[T]) -> T:
        """A component's settings dataclass (e.g. Limits) filled from the fields of
        the same names: the component declares what it needs, no copy by hand."""
        return cls(**{f.name: getattr(self, f.name) for f in fields(cls)})  # type: ignore[arg-type]

    @property
    def socket_gid(self) -> int | None:
        """The group allowed to connect (sockets 0660, dirs 0750); None: the owner only."""
        return None if self.socket_group is None else group_id(self.socket_group)


_SETTINGS: tuple[_Setting, ...] = tuple(
    _Setting(f.name, *f.metadata["setting"]) for f in fields(Config) if "setting" in f.metadata)
SETTING_NAMES: tuple[str, ...] = tuple(s.name for s in _SETTINGS)
_BY_NAME = {s.name: s for s in _SETTINGS}

_EPILOG = f"""\
precedence: command line > {ENV_PREFIX}* environment variables > config file > defaults.

The config file (--config PATH or ${CONFIG_ENV}) is TOML with the setting names
as top-level keys, e.g.:
    data_dir = "/var/lib/flowd"
    durability = "relaxed"
    journal_max_bytes = "128M"
    tracemalloc = false
Unknown keys are an error. Relative paths in the file are relative to the file.
Boolean variables accept 1/0, true/false, yes/no; empty variables are ignored.
SIGHUP re-reads the configuration: log_level is applied, the log file is reopened,
and other changed settings are logged as needing a restart.

{exitcodes.epilog()}"""


def build_parser() -> argparse.ArgumentParser:
    """The `flowd` command line; every option documents its variable and default.
    Defaults are suppressed so load_config can tell "given" from "not given"."""
    parser = OneLineParser(
        prog="flowd", description="Serve a shared store of flows over ZeroMQ.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", metavar="PATH",
                        help=f"TOML config file (env {CONFIG_ENV}; default: none)")
    for s in _SETTINGS:
        text = f"{s.help} (env {s.env}; default: {s.default_text})".replace("%", "%%")
        if s.convert is to_bool:
            parser.add_argument(s.option, action=argparse.BooleanOptionalAction, help=text)
        else:
            parser.add_argument(s.option, metavar=s.metavar, help=text)
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration, print it and exit")
    parser.add_argument("--version", action="version", version=f"flowd {__version__}")
    return parser


def load_config(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build and validate the Config. argv None means sys.argv[1:]; environ
    None means os.environ. Raises ConfigError; bad option syntax exits via
    argparse (status 2)."""
    env = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    layers: dict[str, tuple[Any, str, Path | None]] = {}
    config_file = _config_path(args, env)
    if config_file is not None:
        layers.update(_read_file(config_file))
    for s in _SETTINGS:
        if env.get(s.env):
            layers[s.name] = (env[s.env], f"environment ({s.env})", None)
    for s in _SETTINGS:
        if s.name in args:
            layers[s.name] = (args[s.name], f"command line ({s.option})", None)
    config = _build(layers, env)
    config.config_file = config_file
    config.check_config = bool(args.get("check_config", False))
    check_rules(config)
    return config


def _config_path(args: Mapping[str, Any], env: Mapping[str, str]) -> Path | None:
    raw = args.get("config") or env.get(CONFIG_ENV)
    if not raw:
        return None
    return _absolute(raw, None, env)


def _read_file(path: Path) -> dict[str, tuple[Any, str, Path | None]]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    for key in data:
        if key not in _BY_NAME:
            close = difflib.get_close_matches(key.replace("-", "_"), SETTING_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"config file {path}: unknown setting {key!r}{hint}")
    return {k: (v, f"config file {path} ({k})", path.parent) for k, v in data.items()}


def _build(layers: Mapping[str, tuple[Any, str, Path | None]], env: Mapping[str, str]) -> Config:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in _SETTINGS:
        if s.name not in layers:
            values[s.name] = default_data_dir(env) if s.name == "data_dir" else s.default
            sources[s.name] = "default"
            continue
        raw, source, base = layers[s.name]
        try:
            value = s.convert(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid {s.name} from {source}: {exc}") from None
        values[s.name] = _absolute(value, base, env) if s.is_path else value
        sources[s.name] = source
    return Config(**values, sources=sources)


def _expand_user(value: str, env: Mapping[str, str]) -> Path:
    """Like Path.expanduser, but "~" follows the given environment's HOME."""
    if (value == "~" or value.startswith("~/")) and env.get("HOME"):
        return Path(env["HOME"] + value[1:])
    return Path(value).expanduser()


def _absolute(value: str, base: Path | None, env: Mapping[str, str]) -> Path:
    path = _expand_user(value, env)
    return path if path.is_absolute() else (base or Path.cwd()) / path


def reload_live(old: Config, new: Config) -> list[str]:
    """Apply what can change while running (log_level) and record it in `old`,
    which stays the config in effect. Returns the names of other settings
    that differ and therefore need a restart, for the daemon to log."""
    changed = [n for n in SETTING_NAMES if getattr(old, n) != getattr(new, n)]
    if "log_level" in changed:
        logsetup.set_level(new.log_level)
        old.log_level = new.log_level
        old.sources["log_level"] = new.sources.get("log_level", "reload")
    return [n for n in changed if n not in RELOADABLE]
