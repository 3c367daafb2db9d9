"""Every row of the settings table reaches the component that uses it.

The test walks ``flowd.config._SETTINGS``: each setting gets a value that is
not its default, and an observer reads where it landed (the component's own
attribute, not the Config). A new setting without an observer here fails the
test, and so does one that the daemon's wiring drops on the way.
"""

from __future__ import annotations

import grp
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon as FlowdProcess

from flowd.config import _SETTINGS, Config
from flowd.daemon import Daemon
from flowd.limits import QUEUE_SLOT_BYTES
from flowd.loop import Loop

KiB, MiB = 1 << 10, 1 << 20
GROUP = grp.getgrgid(os.getgid()).gr_name

#: setting -> (a value that is not the default, where the daemon put it)
IN_PROCESS: dict[str, tuple[Any, Callable[[Daemon, Loop], Any]]] = {
    "endpoint": ("ipc://@flowd-wiring-req", lambda d, lp: d.endpoint),
    "events_endpoint": ("ipc://@flowd-wiring-ev", lambda d, lp: d.events),
    "durability": ("relaxed", lambda d, lp: d.journal.durability),
    "snapshot_interval": (7.5, lambda d, lp: d.snap.interval),
    "journal_max_bytes": (3 * MiB, lambda d, lp: d.snap.max_journal_bytes),
    "snapshot_rate": (5 * MiB, lambda d, lp: d.snap.rate),
    "max_request_bytes": (2 * MiB, lambda d, lp: d.service.max_request_bytes),
    "history": (123, lambda d, lp: d.service.history.size),
    "history_bytes": (5 * MiB, lambda d, lp: d.service.history.max_bytes),
    "retry_keys_bytes": (6 * MiB, lambda d, lp: d.service.keys.max_bytes),
    "reply_page_bytes": (300 * KiB, lambda d, lp: d.service.pager.page_bytes),
    "peer_queue_bytes": (7 * MiB, lambda d, lp: lp.reply_slots * QUEUE_SLOT_BYTES),
    "subscriber_queue_bytes": (9 * MiB, lambda d, lp: lp.event_slots * QUEUE_SLOT_BYTES),
    "socket_group": (GROUP, lambda d, lp: grp.getgrgid(d.lock.gid).gr_name),
    "backend": ("etcd", lambda d, lp: d.service.backend.describe()["kind"]),
    "etcd_endpoints": (("http://10.0.0.1:2379", "https://10.0.0.2:2379"),
                       lambda d, lp: d.service.backend.endpoints),
    "etcd_prefix": ("/flowd/other", lambda d, lp: d.service.backend.prefix),
    "etcd_cacert": ("/etc/flowd/ca.pem", lambda d, lp: d.service.backend.cacert),
    "etcd_cert": ("/etc/flowd/client.pem", lambda d, lp: d.service.backend.cert),
    "etcd_key": ("/etc/flowd/client.key", lambda d, lp: d.service.backend.key),
}
#: settings that only take effect beside others (the etcd ones need --backend etcd)
COMPANIONS: dict[str, dict[str, Any]] = {
    name: {"backend": "etcd"} for name in
    ("etcd_endpoints", "etcd_prefix", "etcd_cacert", "etcd_cert", "etcd_key")}
#: settings observed on a real process (below): the entry point's, and curve_dir (its
#: keys are opened with the data dir, not when the Daemon is built)
ENTRY_POINT = {"data_dir", "log_level", "log_file", "tracemalloc", "curve_dir"}


def test_every_setting_has_an_observer() -> None:
    names = {s.name for s in _SETTINGS}
    assert names == set(IN_PROCESS) | ENTRY_POINT
    for s in _SETTINGS:  # each row's default is the Config field's default
        assert getattr(Config(), s.name) == (Config().data_dir if s.name == "data_dir"
                                             else s.default)


@pytest.mark.parametrize("name", sorted(IN_PROCESS))
def test_setting_reaches_its_component(name: str, tmp_path: Path) -> None:
    value, observe = IN_PROCESS[name]
    default = next(s.default for s in _SETTINGS if s.name == name)
    assert value != default
    rt = Daemon(Config(data_dir=tmp_path / "data", **COMPANIONS.get(name, {}), **{name: value}))
    loop = Loop(rt)
    try:
        assert observe(rt, loop) == value
    finally:
        loop.ctx.destroy(linger=0)
        loop.wake_r.close()
        loop.wake_w.close()


def test_entry_point_settings_reach_a_real_flowd(tmp_path: Path) -> None:
    """data_dir, log_level, log_file, tracemalloc and curve_dir, through `flowd`
    itself: the log file gets DEBUG lines, stats report the traced heap and the
    CURVE gate, and the server key pair is made in the curve dir."""
    data, log_file, keys = tmp_path / "d", tmp_path / "out.txt", tmp_path / "keys"
    d = FlowdProcess(data, "--log-level", "debug", "--log-file", str(log_file), "--tracemalloc",
                     "--max-request-bytes", "64K", "--curve-dir", str(keys)).start()
    try:
        with d.client(timeout=20.0) as c:
            stats = c.stats()
            hello = c.hello()
        assert hello["max_request_bytes"] == 64 * KiB and hello["data_dir"] == str(data)
        assert "python_heap_bytes" in json.dumps(stats)
        assert "curve" in stats and (keys / "server.key_secret").is_file()
    finally:
        assert d.stop() == 0
    assert " DEBUG " in log_file.read_text()
