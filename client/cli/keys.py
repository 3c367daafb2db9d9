"""``flowctl keys new|allow|revoke|list``: CURVE key files for tools on other hosts.

``new NAME`` writes NAME.key (public, 0644) and NAME.key_secret (0600) in
zmq.auth's certificate format, never over an existing file. ``allow`` copies
a public key into ``CURVE_DIR/clients``, ``revoke`` removes it, ``list`` shows
the allow-list and the server's public key. Every write is atomic (temp file,
fsync, rename or link, fsync of the dir), so the daemon's directory watch
never reads half a file; a running flowd applies the change within a moment.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import zmq

from ..curve import certificate_text, is_z85_key
from ..exitcodes import USAGE
from .context import CliError, Ctx

CLIENTS = "clients"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PUBLIC = re.compile(rb'^\s*public-key\s*=\s*"([^"]{40})"\s*$', re.M)


def write_file(path: Path, data: bytes, mode: int, replace: bool = False) -> None:
    """Atomically create ``path`` with ``mode`` (replacing it only if ``replace``)."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise CliError(f"{path} exists; not overwriting it", USAGE) from None
            os.unlink(tmp)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _name(value: str | None, what: str) -> str:
    if not value or not NAME.fullmatch(value):
        raise CliError(f"{what}: {value!r} is not a plain name (letters, digits, . _ -; "
                       "up to 64)", USAGE)
    return value


def public_key_of(path: Path) -> bytes:
    """The one public key of a NAME.key file; a secret key file is refused."""
    try:
        data = path.read_bytes()[:4097]
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}", USAGE) from None
    found = _PUBLIC.findall(data)
    if b"secret-key" in data:
        raise CliError(f"{path} holds a secret key: allow the NAME.key file, and keep "
                       "NAME.key_secret on the client's host", USAGE)
    if len(data) > 4096 or len(found) != 1 or not is_z85_key(found[0]):
        raise CliError(f"{path} is not a CURVE public key file (flowctl keys new makes one)",
                       USAGE)
    return bytes(found[0])


def _curve_dir(ctx: Ctx) -> Path:
    raw = ctx.args.curve_dir or os.environ.get("FLOWD_CURVE_DIR")
    if not raw:
        raise CliError(f"keys {ctx.args.action} needs --curve-dir DIR (flowd's --curve-dir)",
                       USAGE)
    return Path(raw).expanduser()


def cmd_keys(ctx: Ctx) -> int:
    action = ctx.args.action
    if action == "new":
        return _new(ctx)
    curve_dir = _curve_dir(ctx)
    clients = curve_dir / CLIENTS
    if action == "list":
        return _list(ctx, curve_dir)
    if action == "allow":
        if not ctx.args.target:
            raise CliError("keys allow needs PATH/NAME.key", USAGE)
        path = Path(ctx.args.target).expanduser()
        name = _name(path.name[:-4] if path.name.endswith(".key") else None, "keys allow")
        key = public_key_of(path)
        clients.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_file(clients / f"{name}.key", certificate_text(key), 0o644, replace=True)
        print(f"allowed {name} ({key.decode()})")
        return 0
    name = _name(ctx.args.target, "keys revoke")
    try:
        os.unlink(clients / f"{name}.key")
    except FileNotFoundError:
        raise CliError(f"{name} is not allowed in {clients} (flowctl keys list)", USAGE) from None
    dfd = os.open(clients, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    print(f"revoked {name}: its requests are refused from now on")
    return 0


def _new(ctx: Ctx) -> int:
    name = _name(ctx.args.target, "keys new")
    directory = Path(ctx.args.dir or ".").expanduser()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    public, secret = zmq.curve_keypair()
    write_file(directory / f"{name}.key_secret", certificate_text(public, secret), 0o600)
    write_file(directory / f"{name}.key", certificate_text(public), 0o644)
    print(f"{directory / name}.key (give it to the daemon's admin: flowctl keys allow) and "
          f"{name}.key_secret (stays on this host, 0600); public key {public.decode()}")
    return 0


def _list(ctx: Ctx, curve_dir: Path) -> int:
    rows = []
    try:
        names = sorted(os.listdir(curve_dir / CLIENTS))
    except FileNotFoundError:
        names = []
    for entry in names:
        if entry.endswith(".key") and not entry.startswith("."):
            try:
                key = public_key_of(curve_dir / CLIENTS / entry).decode()
            except CliError as exc:
                key = f"(unusable: {exc.message})"
            rows.append({"name": entry[:-4], "key": key})
    server = curve_dir / "server.key"
    server_key = public_key_of(server).decode() if server.exists() else None
    if ctx.args.json:
        print(json.dumps({"server": server_key, "clients": rows}, indent=2))
        return 0
    print(f"server {server_key or '(not made yet: flowd makes it on first start)'}")
    for row in rows:
        print(f"{row['name']}\t{row['key']}")
    return 0
