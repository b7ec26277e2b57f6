"""The README's Quickstart works as written: its install extra, its preset and its test command exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from miaray.sweep import PRESETS

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[list[str]]:
    """The commands of the Quickstart's code block, comments dropped, each split as a shell would."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quickstart\n(.*?)^## ", text, re.S | re.M)
    assert section, "README.md has no '## Quickstart' section"
    block = re.search(r"```bash\n(.*?)```", section.group(1), re.S)
    assert block, "the Quickstart has no bash code block"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]


def _optional_dependencies() -> set[str]:
    """The extras of pyproject.toml (tomllib from Python 3.11; on 3.10 the table's keys, read by line)."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10
        table = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?:^\[|\Z)", text, re.S | re.M)
        return set(re.findall(r"^([\w-]+)\s*=", table.group(1), re.M)) if table else set()
    return set(tomllib.loads(text)["project"].get("optional-dependencies", {}))


def _without_interpreter(command: list[str]) -> list[str]:
    """`python3 -m pytest -q` and `python -m pytest -q` are the same command."""
    return command[1:] if command and re.fullmatch(r"python3?", command[0]) else command


def test_the_quickstart_is_install_main_job_and_tests():
    install, job, tests = _quickstart_commands()
    assert install[:3] == ["pip", "install", "-e"], install
    extras = re.fullmatch(r"\.\[([\w,-]+)\]", install[3])
    assert extras, f"the install command names no extra: {install}"
    optional = _optional_dependencies()
    for extra in extras.group(1).split(","):
        assert extra in optional, f"extra {extra!r} is not in pyproject.toml's optional-dependencies {sorted(optional)}"

    assert job[:2] == ["python", "sweeps/full_grid.py"] and (ROOT / job[1]).is_file(), job
    assert job[2] == "--preset" and job[3] in PRESETS, f"preset {job[3]!r} not in {sorted(PRESETS)}"

    ci = [shlex.split(line) for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert _without_interpreter(tests) == _without_interpreter(ci[-1]), (tests, ci[-1])
    assert any(c[:3] == ["python3", "-m", "pip"] and c[3:] == install[1:] for c in ci), \
        "CI does not install the project the way the README says"
