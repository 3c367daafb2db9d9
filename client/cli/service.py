"""``flowctl service install --user | --system``: the systemd unit for this install.

The shipped units (package data, from systemd/) run ``/usr/bin/env flowd``:
they verify as they are and work for a flowd on the service manager's PATH.
Installing pins ``ExecStart=`` to the flowd next to the running flowctl (the
same venv: ``sys.executable``'s bin dir, not resolved, so a venv's python
symlink keeps pointing into the venv) and ``Documentation=`` to the README
installed with that package, which exists as long as that flowd does. The
unit is checked with ``systemd-analyze verify`` (when installed) before it is
written, atomically, and never over a different file without ``--force``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from ..exitcodes import FAILED, USAGE
from ..hints import user_unit_path
from .context import CliError, Ctx
from .transfer import atomic_write

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
TEMPLATES = {"user": "flowd-user.service", "system": "flowd.service"}
#: complaints of verify about this machine, not the unit (the flowd user not created yet)
MACHINE_ONLY = re.compile(r"\b(user|group)\b.*\b(not found|does not exist|no such|unknown|"
                          r"failed to resolve)|failed to resolve (user|group)", re.IGNORECASE)
HIDDEN_BY_PROTECT_HOME = (Path("/home"), Path("/root"), Path("/run/user"))


def shipped(name: str) -> str:
    return (resources.files("flowd_client") / "share" / name).read_text(encoding="utf-8")


def readme_path() -> Path:
    return Path(str(resources.files("flowd_client") / "share" / "README.md")).resolve()


def exec_path(path: Path) -> str:
    """``path`` as ExecStart's first word: ``%`` escaped, quoted if it has blanks."""
    text = str(path).replace("%", "%%")
    if re.search(r"[\s\"'\\]", text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render(scope: str, flowd: Path, readme: Path) -> str:
    """The shipped unit with this install's flowd and README filled in."""
    text = shipped(TEMPLATES[scope])
    text, n = re.subn(r"^ExecStart=/usr/bin/env flowd ", lambda _: f"ExecStart={exec_path(flowd)} ",
                      text, count=1, flags=re.MULTILINE)
    if n != 1:
        raise CliError(f"the shipped {TEMPLATES[scope]} has no ExecStart=/usr/bin/env flowd line")
    doc = f"Documentation=file://{readme}"
    return re.sub(r"^(Description=.*)$", lambda m: f"{m.group(1)}\n{doc}", text, count=1,
                  flags=re.MULTILINE)


def flowd_next_to_me() -> Path:
    flowd = Path(sys.executable).parent / "flowd"
    if not (flowd.is_file() and os.access(flowd, os.X_OK)):
        raise CliError(f"there is no flowd next to this flowctl ({flowd}); install the flowd "
                       "package into this environment first")
    return flowd.absolute()


def check_system_install(flowd: Path) -> None:
    """The system unit runs as user flowd with ProtectHome=yes: a flowd under a home dir
    would not even be visible to it."""
    for hidden in HIDDEN_BY_PROTECT_HOME:
        if flowd.is_relative_to(hidden):
            raise CliError(f"{flowd} is under {hidden}, which the system unit hides "
                           "(ProtectHome=yes); install flowd elsewhere, e.g. `python3 -m venv "
                           "/opt/flowd && /opt/flowd/bin/pip install .`, and run "
                           "/opt/flowd/bin/flowctl service install --system", USAGE)


def verify(text: str, scope: str) -> list[str] | None:
    """Problems ``systemd-analyze verify`` finds in the unit (None: it is not installed)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return None
    with tempfile.TemporaryDirectory(prefix="flowctl-unit-") as tmp:
        unit = Path(tmp) / "flowd.service"
        unit.write_text(text, encoding="utf-8")
        env = {**os.environ, "SYSTEMD_LOG_COLOR": "0"}
        if scope == "user" and not os.environ.get("XDG_RUNTIME_DIR"):
            (Path(tmp) / "run").mkdir(mode=0o700)
            env["XDG_RUNTIME_DIR"] = str(Path(tmp) / "run")  # --user needs one, even offline
        cmd = [analyze, "verify", *(["--user"] if scope == "user" else []), str(unit)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp,
                              timeout=60, check=False)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    problems = [ln for ln in lines if not MACHINE_ONLY.search(ln)]
    return problems if proc.returncode and problems else []


def next_steps(scope: str) -> list[str]:
    if scope == "user":
        return ["systemctl --user daemon-reload && systemctl --user enable --now flowd",
                "loginctl enable-linger $USER   # optional: keep it running after you log out"]
    steps = ["systemctl daemon-reload && systemctl enable --now flowd"]
    try:
        pwd.getpwnam("flowd")
    except KeyError:
        steps.insert(0, "useradd --system --home-dir /var/lib/flowd --shell /usr/sbin/nologin "
                        "flowd")
    return steps


def _target(ctx: Ctx, scope: str) -> Path:
    if ctx.args.unit_dir:
        return Path(ctx.args.unit_dir).expanduser() / "flowd.service"
    return user_unit_path() if scope == "user" else SYSTEM_UNIT_DIR / "flowd.service"


def cmd_service(ctx: Ctx) -> int:
    args = ctx.args
    if args.user == args.system:
        raise CliError("say which unit: service install --user or --system", USAGE)
    scope = "user" if args.user else "system"
    flowd = flowd_next_to_me()
    if scope == "system":
        check_system_install(flowd)
    text = render(scope, flowd, readme_path())
    problems = verify(text, scope)
    if problems:
        raise CliError(f"systemd-analyze verify refused the unit (nothing written): "
                       f"{'; '.join(problems[:3])}", FAILED)
    checked = "systemd-analyze verify: ok" if problems is not None else (
        "not verified: systemd-analyze is not installed")
    target = _target(ctx, scope)
    if args.dry_run:
        sys.stdout.write(text)
        print(f"flowctl: dry run: would write {target} ({checked})", file=sys.stderr)
        return 0
    if target.exists() and target.read_text(encoding="utf-8", errors="replace") != text:
        if not args.force:
            raise CliError(f"{target} exists and differs; compare with --dry-run, then add "
                           "--force to replace it", FAILED)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, text.encode())
    print(f"wrote {target} (ExecStart={flowd}; {checked})")
    print("next:\n" + "\n".join(f"  {step}" for step in next_steps(scope)))
    return 0
