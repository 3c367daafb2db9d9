"""The README's tested blocks run as written against a real daemon, so the README
cannot drift from the code: the Python snippet, the flowctl session, the exit codes.

A block is tested when the line before its fence is ``<!-- tested: ... -->``; the
test fails if the README has fewer such blocks than it expects, so removing the
marker cannot silently turn the test off.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from flowd_client.exitcodes import TABLE

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^<!-- tested:[^\n]*-->\n```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
RUN_TIMEOUT = 120


def readme_blocks() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for lang, body in BLOCK.findall(README.read_text(encoding="utf-8")):
        out.setdefault(lang, []).append(body)
    assert len(out.get("python", [])) == 1 and len(out.get("sh", [])) == 1, out.keys()
    return out


def env_for(tmp_path: Path) -> dict[str, str]:
    """A user's shell after `source .venv/bin/activate`: the venv's bin first on PATH."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWD_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               HOME=str(home), TMPDIR=str(tmp), PYTHONUNBUFFERED="1")
    return env


def test_python_snippet_runs_as_written(daemon, tmp_path: Path) -> None:
    assert daemon.data_dir == tmp_path / "data"  # the snippet's "./data", from cwd tmp_path
    snippet = tmp_path / "snippet.py"
    snippet.write_text(readme_blocks()["python"][0], encoding="utf-8")
    proc = subprocess.run(["python", str(snippet)], cwd=tmp_path, env=env_for(tmp_path),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "someone else changed it; now at" in out
    assert re.search(r"^\[True, 'flow_[0-9a-f]{8}', True\]$", out, re.MULTILINE), out
    changes = re.findall(r"^(\d+) (\w+) (flow_[0-9a-f]{8})$", out, re.MULTILINE)
    assert changes and {op for _, op, _ in changes} >= {"add_flow", "update_flow"}
    revisions = [int(r) for r, _, _ in changes]
    assert revisions == sorted(revisions)  # its own changes, in order, then it ended


def test_flowctl_session_runs_as_written(daemon, tmp_path: Path) -> None:
    block = readme_blocks()["sh"][0]
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path,
                          env=env_for(tmp_path), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "# TYPE flowd_flows gauge" in out and "flowd_up 1.0" in out
    assert "stopped flowd" in out and daemon.proc.wait(30) == 0  # the last line stops it
    assert (tmp_path / "home/.local/share/bash-completion/completions/flowctl").exists()
    assert list((tmp_path / "tmp").glob("flows-backup.json*"))


def test_exit_code_table_matches_the_code() -> None:
    text = README.read_text(encoding="utf-8")
    for code, meaning in TABLE:
        assert f"| {code} | {meaning} |" in text, (code, meaning)
