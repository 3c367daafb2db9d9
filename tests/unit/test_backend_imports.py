"""The local backend never loads etcd's client: flowd runs where etcd3/grpc are absent."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("etcd3", "grpc"):
            raise ImportError(f"{name} is blocked for this test")
        return None
sys.meta_path.insert(0, Block())
import flowd.__main__, flowd.daemon, flowd.loop, flowd.config
from flowd.config import Config
from flowd.daemon import Daemon
Daemon(Config(data_dir=__import__("pathlib").Path(sys.argv[1])))
assert not any(m.split(".")[0] in ("etcd3", "grpc") for m in sys.modules), "loaded"
print("ok")
"""


def test_flowd_with_the_local_backend_imports_no_etcd(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-c", BLOCKED, str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_etcd_backend_is_the_one_that_needs_it(tmp_path) -> None:
    """The same guard fails once the etcd backend is asked for (the test can fail)."""
    code = BLOCKED.replace("Config(data_dir=", "Config(backend='etcd', data_dir=")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "is blocked for this test" in out.stderr
