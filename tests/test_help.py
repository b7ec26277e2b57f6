"""`--help` of every command: each option's default stated once, never "default: None", every option explained."""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from miaray.cli import HelpFormatter
from miaray.search import build_search_parser
from miaray.sweep import PRESETS, build_parser as build_sweep_parser
from miaray.sweep.cli import full_grid_main, unknown_pruning_main
from miaray.unit import build_parser as build_unit_parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["analysis/figures.py", "analysis/report.py", "analysis/claims.py", "analysis/exposure.py",
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("bench_*.py"))]
DEFAULT = re.compile(r"\bdefault\b", re.IGNORECASE)


def _script_parser(path: str) -> argparse.ArgumentParser:
    """The `build_parser()` of a script outside the package (analysis/, benchmarks/), imported from its file."""
    folder = str((ROOT / path).parent)
    if folder not in sys.path:  # the benchmarks import their _common module as scripts do
        sys.path.insert(0, folder)
    name = f"_help_{Path(path).stem}"
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # its dataclasses look it up there
    spec.loader.exec_module(module)
    return module.build_parser()


def _sweep_help(main, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _option_helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each option's help as `--help` prints it (defaults expanded), keyed by its longest flag."""
    formatter = parser._get_formatter()
    return {max(action.option_strings or [action.dest], key=len): formatter._expand_help(action)
            for action in parser._actions if action.help is not argparse.SUPPRESS}


PARSERS = {"python -m miaray.unit": build_unit_parser,
           "sweeps/full_grid.py": lambda: build_sweep_parser(prog="full_grid.py", description="", presets=PRESETS),
           "sweeps/defense_search.py": build_search_parser,
           **{path: (lambda path=path: _script_parser(path)) for path in SCRIPTS}}


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_states_its_default_once_and_never_none(command):
    parser = PARSERS[command]()
    assert parser.formatter_class is HelpFormatter, f"{command}: use miaray.cli.HelpFormatter"
    text = parser.format_help()
    assert "default: None" not in text and "(default None)" not in text, text
    helps = _option_helps(parser)
    assert len(helps) > 2, helps  # a parser with its options, not an empty one
    for option, help_text in helps.items():
        assert help_text.strip(), f"{command} {option}: no help text"
        assert len(DEFAULT.findall(help_text)) <= 1, f"{command} {option}: {help_text!r}"


def test_the_sweep_scripts_help_shows_no_doubled_default(capsys):
    for main in (full_grid_main, unknown_pruning_main):
        text = _sweep_help(main, capsys)
        assert "default: None" not in text
        # One option's help runs from its flag line to the next line that starts a flag or a section.
        blocks = re.split(r"\n(?=  -|\S)", text)
        doubled = [block for block in blocks if len(DEFAULT.findall(block)) > 1]
        assert not doubled, doubled


def test_the_formatter_appends_a_default_only_where_none_is_stated():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--count", type=int, default=3, help="things, >= 1")
    parser.add_argument("--zero", type=int, default=0, help="a count that may be 0")
    parser.add_argument("--stated", type=int, default=5, help="items (default 5, the paper's)")
    parser.add_argument("--unset", help="a folder (default: the current one)")
    parser.add_argument("--flag", action="store_true", help="turn it on")
    helps = _option_helps(parser)
    assert helps["--count"] == "things, >= 1 (default: 3)"
    assert helps["--zero"] == "a count that may be 0 (default: 0)"  # 0 is a value, not "no default"
    assert helps["--stated"] == "items (default 5, the paper's)"
    assert helps["--unset"] == "a folder (default: the current one)"
    assert helps["--flag"] == "turn it on"

