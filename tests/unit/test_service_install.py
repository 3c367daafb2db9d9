"""`flowctl service install`: the unit names this install's flowd and README, verifies,
is written atomically, and never replaces a different unit without --force."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from flowd_client import cli
from flowd_client.cli import service as cli_service
from flowd_client.cli.context import CliError
from flowd_client.exitcodes import FAILED, USAGE

FLOWD = Path(sys.executable).parent / "flowd"
needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd to verify units)")


def directive(text: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", text, flags=re.MULTILINE)


@pytest.mark.parametrize("scope", ["user", "system"])
def test_render_pins_this_flowd_and_an_existing_readme(scope: str) -> None:
    text = cli_service.render(scope, FLOWD, cli_service.readme_path())
    (exec_start,) = directive(text, "ExecStart")
    binary = exec_start.split()[0]
    assert binary == str(FLOWD) and Path(binary).is_file()
    (doc,) = directive(text, "Documentation")
    assert doc.startswith("file://") and Path(doc[len("file://"):]).is_file()
    assert "# flowd" in Path(doc[len("file://"):]).read_text(encoding="utf-8")


def test_exec_path_escapes_what_systemd_would_read_otherwise() -> None:
    assert cli_service.exec_path(Path("/opt/flowd/bin/flowd")) == "/opt/flowd/bin/flowd"
    assert cli_service.exec_path(Path("/opt/a b/100%/flowd")) == '"/opt/a b/100%%/flowd"'


@needs_analyze
@pytest.mark.parametrize("scope", ["user", "system"])
def test_rendered_unit_verifies(scope: str) -> None:
    assert cli_service.verify(cli_service.render(scope, FLOWD, cli_service.readme_path()),
                              scope) == []


@needs_analyze
def test_verify_reports_a_broken_unit() -> None:
    text = cli_service.render("user", FLOWD, cli_service.readme_path())
    broken = text.replace(f"ExecStart={FLOWD}", "ExecStart=/nonexistent/flowd")
    assert cli_service.verify(broken, "user")


def test_install_writes_then_refuses_a_different_file(tmp_path: Path, capsys) -> None:
    units = tmp_path / "units"
    argv = ["service", "install", "--user", "--unit-dir", str(units)]
    assert cli.main(argv) == 0
    unit = units / "flowd.service"
    out = capsys.readouterr().out
    assert f"wrote {unit}" in out and "systemctl --user daemon-reload" in out
    assert directive(unit.read_text(), "ExecStart")[0].startswith(str(FLOWD))
    assert cli.main(argv) == 0  # the same content again: fine
    unit.write_text(unit.read_text() + "# edited by hand\n")
    assert cli.main(argv) == FAILED
    assert "--force" in capsys.readouterr().err
    assert unit.read_text().endswith("# edited by hand\n")  # kept
    assert cli.main([*argv, "--force"]) == 0
    assert not unit.read_text().endswith("# edited by hand\n")


def test_dry_run_prints_and_writes_nothing(tmp_path: Path, capsys) -> None:
    units = tmp_path / "units"
    assert cli.main(["service", "install", "--system", "--dry-run", "--unit-dir",
                     str(units)]) == 0
    got = capsys.readouterr()
    assert directive(got.out, "User") == ["flowd"] and "would write" in got.err
    assert not units.exists()


def test_scope_must_be_said_once(capsys) -> None:
    assert cli.main(["service", "install"]) == USAGE
    assert cli.main(["service", "install", "--user", "--system"]) == USAGE
    assert capsys.readouterr().err.count("\n") == 2


def test_system_unit_refuses_a_flowd_under_home() -> None:
    with pytest.raises(CliError) as err:
        cli_service.check_system_install(Path("/home/someone/.venv/bin/flowd"))
    assert err.value.code == USAGE and "ProtectHome" in err.value.message
    cli_service.check_system_install(Path("/opt/flowd/bin/flowd"))  # fine
