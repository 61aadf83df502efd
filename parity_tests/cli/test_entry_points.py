"""Every command is one name on both routes: ``scripts/<name>.py`` and the installed console script
``torch-lm-<name>`` run the same ``torch_lm.cli.<name>.main``, and each route's ``--help`` names
itself."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMANDS = sorted(path.stem for path in (REPO / "scripts").glob("*.py"))


def console_script(command: str) -> str:
    return "torch-lm-" + command.replace("_", "-")


def installed_console_scripts() -> dict[str, str]:
    """name -> "module:function" of every console script the installed package declares."""
    return {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.value.startswith("torch_lm.")}


def test_every_script_has_the_console_script_of_its_name():
    assert installed_console_scripts() == {console_script(c): f"torch_lm.cli.{c}:main" for c in COMMANDS}


@pytest.mark.parametrize("command", COMMANDS)
def test_both_routes_print_help_under_their_own_name(command):
    name = console_script(command)
    installed = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert installed, f"{name} is not installed: pip install -e ."
    for argv, prog in (
        ([installed], name),
        ([sys.executable, str(REPO / "scripts" / f"{command}.py")], f"{command}.py"),
    ):
        result = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: {prog} "), result.stdout[:80]
