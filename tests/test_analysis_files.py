"""analysis/ on damaged files: an unreadable rows, signals, ROC or pairs file is skipped with a warning
naming it (and a note in the report), the rest is drawn; a results folder that does not exist is one
error naming it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `analysis/` is a folder of scripts

from analysis.figures import main as figures_main  # noqa: E402
from analysis.report import main as report_main  # noqa: E402
from miaray import results  # noqa: E402
from miaray.unknown_pruning import PAIRS_FILE  # noqa: E402
from test_analysis import make_experiment  # noqa: E402


def test_unreadable_files_are_skipped_and_named_and_the_rest_is_drawn(tmp_path, capsys):
    exp = make_experiment(tmp_path / "exp", unknown=False, defenses=False)
    # Read by the report: a unit's rows, the pairs file, and the signal and ROC files of the units
    # the figures show (L1 unstructured and Slimming at sparsity 0.5, seed 0: u000 and u004; make_experiment
    # numbers units method, sparsity, seed in that order, two seeds each).
    damaged = [exp / "rows" / "u001.parquet", exp / PAIRS_FILE, exp / "roc" / "u004.parquet",
               exp / "signals" / "u000.parquet"]
    for path in damaged:
        path.write_bytes(b"PAR1 cut short")
    page = tmp_path / "report.html"
    with pytest.warns(results.UnreadableResultFile) as caught:
        assert report_main([str(exp), "--out", str(page)]) == 0
    warned = "\n".join(str(w.message) for w in caught)
    for path in damaged:
        assert f"{path}" in warned, path
    text = page.read_text(encoding="utf-8")
    for path in damaged:
        assert f"{path}" in text, path  # listed on the page too
    printed = capsys.readouterr().out
    # Fig. 1 and 4 say the file is unreadable, not that it lacks signals; the others are drawn.
    for name in ("Fig. 1", "Fig. 4"):
        assert re.search(rf"skipped  {re.escape(name)} .*: .*signals/u000\.parquet is unreadable", printed), printed
    assert "lacks the original" not in printed
    assert re.search(r"wrote    Fig. 6 ", printed) and re.search(r"wrote    ROC curves ", printed)
    assert "ERROR" not in printed


def test_a_results_folder_that_does_not_exist_is_one_error_naming_it(tmp_path, capsys):
    missing = tmp_path / "typo"
    for main in (figures_main, report_main):
        with pytest.raises(SystemExit) as info:
            main([str(missing), "--out", str(tmp_path / "out.html")])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert f"no experiment folder at {missing}" in err and "Traceback" not in err
