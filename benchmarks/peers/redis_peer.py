"""Redis as a peer: the store as one hash, HSET/HGET via redis-py on a unix socket.

The benchmark starts its own ``redis-server`` in a temp dir with the AOF on
(``appendonly yes``, ``appendfsync always`` or ``everysec``) and RDB off
(``save ""``), and stops it afterwards, so nothing on the machine is touched.
Values are the flow as JSON bytes; reads return them undecoded (a real tool
would still have to parse them, which favours Redis).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ..datagen import Dataset, load_docs, sample_flow

HASH = "flows"
SKIP_LINE = "redis: skipped (redis-server not installed; apt-get install redis-server)"


def find_server(apt: bool) -> str | None:
    """Path of redis-server; installs it with apt only when allowed (root + FLOWD_BENCH_APT=1)."""
    path = shutil.which("redis-server")
    if path or not apt or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return path
    print("redis: redis-server not found; FLOWD_BENCH_APT=1, installing with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            return None
    return shutil.which("redis-server")


class RedisServer:
    """A private redis-server on a unix socket; ``fsync`` is always|everysec."""

    def __init__(self, binary: str, fsync: str, parent: Path) -> None:
        self.binary, self.fsync = binary, fsync
        self.dir = Path(tempfile.mkdtemp(prefix=f"redis-{fsync}-", dir=parent))
        self.socket = str(self.dir / "redis.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> RedisServer:
        import redis
        cmd = [self.binary, "--port", "0", "--unixsocket", self.socket,
               "--unixsocketperm", "700", "--dir", str(self.dir), "--appendonly", "yes",
               "--appendfsync", self.fsync, "--save", "", "--daemonize", "no",
               "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.proc.returncode}")
            try:
                redis.Redis(unix_socket_path=self.socket).ping()
                return self
            except (redis.ConnectionError, FileNotFoundError):
                time.sleep(0.01)
        raise RuntimeError("redis-server did not answer PING")

    def client(self) -> Any:
        import redis
        return redis.Redis(unix_socket_path=self.socket)

    def fill(self, dataset: Dataset) -> None:
        """HSET every flow of the dataset (pipelined; not timed)."""
        r = self.client()
        pipe = r.pipeline(transaction=False)
        for n, (fid, doc) in enumerate(load_docs(dataset).items(), 1):
            pipe.hset(HASH, fid, orjson.dumps(doc))
            if n % 2000 == 0:
                pipe.execute()
        pipe.execute()
        r.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def doc_bytes(i: int) -> tuple[str, bytes]:
    """A new flow as (id, JSON bytes): what a tool would HSET."""
    name, plans = sample_flow(i)
    fid = f"flow_b{os.getpid():x}_{i:x}"
    return fid, orjson.dumps({"id": fid, "name": name, "plans": plans, "created": "",
                              "updated": "", "revision": 0})


# ---------------------------------------------------------------- worker factories


def reader(socket: str, ids: tuple[str, ...]) -> tuple[Callable[[int], object], Callable[[], None]]:
    import redis
    r = redis.Redis(unix_socket_path=socket)
    k = len(ids)
    return (lambda i: r.hget(HASH, ids[i % k])), r.close


def writer(socket: str) -> tuple[Callable[[int], object], Callable[[], None]]:
    import redis
    r = redis.Redis(unix_socket_path=socket)

    def op(i: int) -> object:
        fid, doc = doc_bytes(i)
        return r.hset(HASH, fid, doc)
    return op, r.close


def mixed(socket: str, ids: tuple[str, ...],
          write_every: int) -> tuple[Callable[[int], object], Callable[[], None]]:
    """One write every ``write_every`` ops, reads otherwise (e.g. 5 -> 80% reads)."""
    read, close = reader(socket, ids)
    write, close2 = writer(socket)

    def op(i: int) -> object:
        return write(i) if i % write_every == 0 else read(i)
    return op, lambda: (close(), close2())
