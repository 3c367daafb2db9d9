"""flowd.config: precedence, validation messages, --help, describe, reload."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from flowd.config import (
    SETTING_NAMES,
    Config,
    ConfigError,
    build_parser,
    default_data_dir,
    load_config,
    reload_live,
)

HOME = {"HOME": "/home/u"}


def load(argv=(), **env) -> Config:
    return load_config(list(argv), {**HOME, **env})


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flowd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    c = load()
    assert c.data_dir == Path("/home/u/.local/state/flowd")
    assert (c.endpoint, c.events_endpoint) == (None, None)
    assert c.durability == "strict"
    assert c.snapshot_interval == 1.0
    assert c.journal_max_bytes == 64 * 1024 * 1024
    assert c.snapshot_rate == 64 * 1024 * 1024
    assert c.max_request_bytes == 16 * 1024 * 1024
    assert c.history == 10000
    assert (c.log_level, c.log_file) == ("INFO", None)
    assert c.tracemalloc is False and c.check_config is False
    assert c.config_file is None
    assert set(c.sources.values()) == {"default"}


def test_default_data_dir_follows_xdg_state_home() -> None:
    assert default_data_dir({"XDG_STATE_HOME": "/s", **HOME}) == Path("/s/flowd")
    # The XDG spec says relative values are invalid and must be ignored.
    assert default_data_dir({"XDG_STATE_HOME": "rel", **HOME}) == Path(
        "/home/u/.local/state/flowd")
    assert load(XDG_STATE_HOME="/x").data_dir == Path("/x/flowd")


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path, 'durability = "none"\nhistory = 5\nlog_level = "debug"\n')
    c = load(["--config", str(cfg), "--durability", "relaxed"],
             FLOWD_DURABILITY="strict", FLOWD_HISTORY="7")
    assert c.durability == "relaxed"
    assert c.history == 7
    assert c.log_level == "DEBUG"
    assert c.sources["durability"] == "command line (--durability)"
    assert c.sources["history"] == "environment (FLOWD_HISTORY)"
    assert c.sources["log_level"].startswith(f"config file {cfg}")
    assert c.config_file == cfg


def test_config_file_from_env_and_relative_paths(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path, 'data_dir = "store"\nlog_file = "~/flowd.log"\n')
    c = load(FLOWD_CONFIG=str(cfg))
    assert c.data_dir == tmp_path / "store"  # relative to the file, not the cwd
    assert c.log_file == Path("/home/u/flowd.log")


def test_relative_cli_path_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load(["--data-dir", "d"]).data_dir == tmp_path / "d"


def test_all_settings_from_env(tmp_path: Path) -> None:
    c = load(FLOWD_DATA_DIR="/d", FLOWD_ENDPOINT="tcp://127.0.0.1:5555",
             FLOWD_EVENTS_ENDPOINT="ipc:///d/ev.sock", FLOWD_DURABILITY="RELAXED",
             FLOWD_SNAPSHOT_INTERVAL="2.5", FLOWD_SNAPSHOT_RATE="16M",
             FLOWD_JOURNAL_MAX_BYTES="1M",
             FLOWD_MAX_REQUEST_BYTES="2048", FLOWD_HISTORY="0", FLOWD_LOG_LEVEL="warning",
             FLOWD_LOG_FILE="/var/log/flowd.log", FLOWD_TRACEMALLOC="yes",
             FLOWD_HISTORY_BYTES="2M", FLOWD_RETRY_KEYS_BYTES="3M", FLOWD_REPLY_PAGE_BYTES="64K",
             FLOWD_PEER_QUEUE_BYTES="8M", FLOWD_SUBSCRIBER_QUEUE_BYTES="4M",
             FLOWD_SOCKET_GROUP="0", FLOWD_CURVE_DIR="/k", FLOWD_BACKEND="etcd",
             FLOWD_ETCD_ENDPOINTS="https://e1:2379, https://e2:2379",
             FLOWD_ETCD_PREFIX="/flowd/x/", FLOWD_ETCD_CACERT="/t/ca.pem",
             FLOWD_ETCD_CERT="/t/c.pem", FLOWD_ETCD_KEY="/t/c.key")
    assert c.describe() == {
        "data_dir": "/d", "endpoint": "tcp://127.0.0.1:5555",
        "events_endpoint": "ipc:///d/ev.sock", "durability": "relaxed",
        "snapshot_interval": 2.5, "snapshot_rate": 16 << 20, "journal_max_bytes": 1024 * 1024,
        "max_request_bytes": 2048, "history": 0, "log_level": "WARNING",
        "log_file": "/var/log/flowd.log", "tracemalloc": True,
        "history_bytes": 2 << 20, "retry_keys_bytes": 3 << 20, "reply_page_bytes": 64 << 10,
        "peer_queue_bytes": 8 << 20, "subscriber_queue_bytes": 4 << 20, "socket_group": "0",
        "curve_dir": "/k", "config_file": None, "backend": "etcd",
        "etcd_endpoints": ("https://e1:2379", "https://e2:2379"), "etcd_prefix": "/flowd/x",
        "etcd_cacert": "/t/ca.pem", "etcd_cert": "/t/c.pem", "etcd_key": "/t/c.key",
    }


@pytest.mark.parametrize(("env", "words"), [
    ({"FLOWD_ETCD_ENDPOINTS": "ftp://x:1"}, "etcd_endpoints"),
    ({"FLOWD_ETCD_ENDPOINTS": " , "}, "etcd_endpoints"),
    ({"FLOWD_ETCD_PREFIX": "flowd"}, "etcd_prefix"),
    ({"FLOWD_BACKEND": "zookeeper"}, "backend"),
    ({"FLOWD_BACKEND": "etcd", "FLOWD_ETCD_CERT": "/c.pem"}, "needs its key"),
    ({"FLOWD_BACKEND": "etcd", "FLOWD_ETCD_CACERT": "/ca.pem"}, "http://"),
])
def test_bad_etcd_settings_are_one_line(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load(**env)


def test_etcd_endpoints_may_be_a_toml_list(tmp_path: Path) -> None:
    f = tmp_path / "flowd.toml"
    f.write_text('backend = "etcd"\netcd_endpoints = ["http://a:2379", "http://b:2379"]\n')
    c = load(["--config", str(f)])
    assert c.etcd_endpoints == ("http://a:2379", "http://b:2379")


def test_memory_bound_defaults_sum_to_at_most_256_mib() -> None:
    c = load()
    total = (c.history_bytes + c.retry_keys_bytes + c.peer_queue_bytes
             + c.subscriber_queue_bytes)
    assert total <= 256 << 20


@pytest.mark.parametrize("value", ["no-such-group-flowd", "99999999"])
def test_unknown_socket_group_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="socket_group"):
        load(FLOWD_SOCKET_GROUP=value)


def test_queue_bounds_hold_at_least_one_slot() -> None:
    with pytest.raises(ConfigError, match="peer_queue_bytes"):
        load(FLOWD_PEER_QUEUE_BYTES="1K")


def test_describe_is_json_and_complete() -> None:
    d = load().describe()
    assert set(d) == {*SETTING_NAMES, "config_file"}
    json.dumps(d)


@pytest.mark.parametrize("text,expected", [
    ("1", True), ("0", False), ("true", True), ("FALSE", False), ("yes", True), ("No", False),
])
def test_env_booleans(text: str, expected: bool) -> None:
    assert load(FLOWD_TRACEMALLOC=text).tracemalloc is expected


def test_cli_boolean_overrides_env() -> None:
    assert load(["--no-tracemalloc"], FLOWD_TRACEMALLOC="1").tracemalloc is False
    assert load(["--tracemalloc"]).tracemalloc is True


def test_empty_env_is_ignored() -> None:
    assert load(FLOWD_DURABILITY="").sources["durability"] == "default"


def test_check_config_flag() -> None:
    assert load(["--check-config"]).check_config is True


@pytest.mark.parametrize("argv,env,words", [
    ([], {"FLOWD_DURABILITY": "fast"}, ["durability", "FLOWD_DURABILITY", "fast"]),
    (["--snapshot-interval", "0"], {}, ["snapshot_interval", "--snapshot-interval"]),
    (["--snapshot-interval", "nan"], {}, ["snapshot_interval"]),
    ([], {"FLOWD_JOURNAL_MAX_BYTES": "12X"}, ["journal_max_bytes", "FLOWD_JOURNAL_MAX_BYTES"]),
    (["--max-request-bytes", "10"], {}, ["max_request_bytes", "at least"]),
    (["--history", "-1"], {}, ["history"]),
    ([], {"FLOWD_LOG_LEVEL": "loud"}, ["log_level", "FLOWD_LOG_LEVEL"]),
    ([], {"FLOWD_TRACEMALLOC": "maybe"}, ["tracemalloc", "FLOWD_TRACEMALLOC"]),
    (["--endpoint", "http://x"], {}, ["endpoint", "--endpoint", "ipc:// or tcp://"]),
    (["--endpoint", "ipc://"], {}, ["endpoint"]),
    (["--endpoint", "tcp://127.0.0.1"], {}, ["endpoint", "HOST:PORT"]),
    (["--endpoint", "tcp://127.0.0.1:99999"], {}, ["endpoint"]),
    (["--endpoint", "tcp://0.0.0.0:5555"], {}, ["endpoint", "loopback"]),
    ([], {"FLOWD_EVENTS_ENDPOINT": "tcp://*:5556"}, ["events_endpoint", "FLOWD_EVENTS_ENDPOINT"]),
    (["--endpoint", "ipc:///a", "--events-endpoint", "ipc:///a"], {}, ["events_endpoint", "same"]),
])
def test_invalid_values_name_setting_and_source(argv, env, words) -> None:
    with pytest.raises(ConfigError) as info:
        load(argv, **env)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("endpoint", [
    "tcp://127.0.0.1:5555", "tcp://127.1.2.3:*", "tcp://[::1]:5555", "tcp://localhost:1",
    "ipc:///run/flowd.sock", "ipc://@abstract",
])
def test_accepted_endpoints(endpoint: str) -> None:
    assert load(["--endpoint", endpoint]).endpoint == endpoint


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5555", "tcp://*:5556", "tcp://[::]:1"])
def test_any_tcp_address_with_a_curve_dir(endpoint: str) -> None:
    c = load(["--endpoint", endpoint, "--curve-dir", "/k"])
    assert c.endpoint == endpoint and str(c.curve_dir) == "/k"
    with pytest.raises(ConfigError, match="loopback.*--curve-dir"):
        load(["--endpoint", endpoint])


def test_config_file_unknown_key_is_named(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path, 'data-dir = "/x"\n')
    with pytest.raises(ConfigError, match="unknown setting 'data-dir'.*'data_dir'"):
        load(["--config", str(cfg)])


def test_config_file_wrong_type_names_file_and_key(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path, "tracemalloc = 1\n")
    with pytest.raises(ConfigError, match=r"tracemalloc from config file .*flowd.toml"):
        load(["--config", str(cfg)])
    cfg.write_text("history = true\n")
    with pytest.raises(ConfigError, match="history"):
        load(["--config", str(cfg)])


def test_config_file_sizes_and_numbers(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path, 'journal_max_bytes = "2G"\nsnapshot_interval = 3\n'
                               "max_request_bytes = 4096\ntracemalloc = true\n")
    c = load(["--config", str(cfg)])
    assert c.journal_max_bytes == 2 * 1024**3
    assert c.snapshot_interval == 3.0 and isinstance(c.snapshot_interval, float)
    assert c.max_request_bytes == 4096 and c.tracemalloc is True


def test_config_file_missing_or_invalid(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(["--config", str(tmp_path / "nope.toml")])
    cfg = write_toml(tmp_path, "durability = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load(["--config", str(cfg)])


def test_help_documents_every_setting(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in SETTING_NAMES:
        assert "--" + name.replace("_", "-") in text
        assert "FLOWD_" + name.upper() in text
    for fragment in ("FLOWD_CONFIG", "--check-config", "precedence", "default: strict",
                     "default: 64M", "default: 10000", "default: INFO", "~/.local/state/flowd"):
        assert fragment in text


def test_unknown_option_exits_like_argparse() -> None:
    with pytest.raises(SystemExit):
        load(["--no-such-option"])


def test_reload_live_applies_log_level_and_lists_the_rest() -> None:
    root = logging.getLogger()
    saved = root.level
    try:
        old = load()
        new = load(["--log-level", "DEBUG", "--history", "5", "--durability", "none"])
        restart = reload_live(old, new)
        assert sorted(restart) == ["durability", "history"]
        assert root.level == logging.DEBUG
        assert old.log_level == "DEBUG" and old.history == 10000
        assert reload_live(old, load(["--log-level", "DEBUG"])) == []
    finally:
        root.setLevel(saved)
