"""Errors at the command line (issue 13): an expected error is one line on stderr and exit status 1 (2 for
a bad option, 130 for Ctrl-C); a bug keeps its traceback, and --debug / MIARAY_DEBUG=1 shows it for
expected errors too. Bad inputs are refused before any work, through the real entry points."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `analysis/` is a folder of scripts

from analysis.claims import main as claims_main  # noqa: E402
from analysis.figures import main as figures_main  # noqa: E402
from analysis.report import main as report_main  # noqa: E402
from miaray import results  # noqa: E402
from miaray.cli import DEBUG_ENV, check_output_file, check_writable_folder, debug_requested, entry_point  # noqa: E402
from miaray.config import ConfigError, UnitConfig  # noqa: E402
from miaray.data.sources import OFFLINE_ENV, DatasetFileError, DatasetNotFoundError  # noqa: E402
from miaray.search import defense_search_main, trials_table  # noqa: E402
from miaray.store import DamagedEntryError  # noqa: E402
from miaray.sweep import full_grid_main, unknown_pruning_main  # noqa: E402
from miaray.sweep.cluster import check_reachable  # noqa: E402
from miaray.unit import failed_rows, main as unit_main  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def command(error: BaseException):
    """An entry point whose work raises `error`: what the real ones do when their work fails."""
    @entry_point(prog="tool", resume="rerun it")
    def main(argv: list[str] | None = None) -> int:
        raise error
    return main


# ---- the mapping -----------------------------------------------------------------------------------
@pytest.mark.parametrize("error, status, line", [
    (ConfigError("--x=3 is not valid: give a number in [0, 1]"), 2,
     "tool: error: --x=3 is not valid: give a number in [0, 1]"),
    (DatasetNotFoundError("dataset 'cifar10': none of the accepted files were found in /d"), 1,
     "tool: error: dataset 'cifar10': none of the accepted files were found in /d"),
    (DatasetFileError("/d/a.tgz: truncated"), 1, "tool: error: /d/a.tgz: truncated"),
    (DamagedEntryError(Path("/s/model/ab"), "meta.json is missing"), 1,
     "tool: error: store entry /s/model/ab is damaged: meta.json is missing"),
    (PermissionError(13, "Permission denied", "/r/x.csv"), 1, "tool: error: [Errno 13] Permission denied: '/r/x.csv'"),
    (ConnectionError("--address h:1: no Ray cluster answers there"), 1,
     "tool: error: --address h:1: no Ray cluster answers there"),
    (KeyboardInterrupt(), 130, "tool: interrupted; rerun it"),
])
def test_an_expected_error_is_one_line_and_its_status(capsys, monkeypatch, error, status, line):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert command(error)([]) == status
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize("argv, env", [(["--debug"], None), (["--deb"], None), ([], "1"), (["x"], "yes")])
def test_debug_shows_the_traceback_of_an_expected_error(monkeypatch, argv, env):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(DEBUG_ENV, env)
    with pytest.raises(DatasetNotFoundError):
        command(DatasetNotFoundError("dataset 'svhn' missing"))(argv)


def test_debug_is_an_option_not_a_positional_or_a_zero(monkeypatch):
    monkeypatch.setenv(DEBUG_ENV, "0")
    assert not debug_requested(["--", "--debug"]) and not debug_requested(["-x"]) and debug_requested(["--debu"])


@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"), KeyError("dataset"),
                                 ValueError("a ValueError of miaray's own logic"), TypeError("x")])
def test_a_bug_keeps_its_traceback(capsys, monkeypatch, bug):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(type(bug)):
        command(bug)([])
    assert capsys.readouterr().err == ""  # nothing said in its place


def test_argparse_usage_errors_pass_through_with_status_2():
    with pytest.raises(SystemExit) as info:
        command(SystemExit(2))([])
    assert info.value.code == 2


def test_folders_and_files_that_cannot_be_written_are_refused_naming_the_option(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="--cache: '.*a_file' is a file, not a folder"):
        check_writable_folder(str(a_file), option="--cache")
    with pytest.raises(ConfigError, match="--artifacts: cannot create the folder '.*/sub/x': '.*a_file' is a file"):
        check_writable_folder(str(a_file / "sub" / "x"), option="--artifacts")
    with pytest.raises(ConfigError, match="--out '.*' is a folder"):
        check_output_file(tmp_path, option="--out")
    with pytest.raises(ConfigError, match="the folder '.*missing' does not exist"):
        check_output_file(tmp_path / "missing" / "x.csv", option="--out", folder_must_exist=True)
    before = sorted(tmp_path.iterdir())
    # A missing folder under a writable one passes, and the checks leave nothing behind: the command creates it.
    check_writable_folder(str(tmp_path / "new" / "deeper"), option="--artifacts")
    check_output_file(tmp_path / "new" / "deeper" / "x.csv", option="--out")
    assert sorted(tmp_path.iterdir()) == before


def test_an_unwritable_folder_is_refused_and_a_missing_one_is_probed_in_its_parent(tmp_path, monkeypatch):
    probed = []

    def refuse(*, dir, prefix):  # what the system answers for a read-only mount, even to root
        probed.append(Path(dir))
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("miaray.cli.tempfile.TemporaryFile", refuse)
    with pytest.raises(ConfigError, match=re.escape(f"--cache: cannot create the folder '{tmp_path}/new/deeper' in "
                                                    f"'{tmp_path}' (Permission denied)")):
        check_writable_folder(str(tmp_path / "new" / "deeper"), option="--cache")
    with pytest.raises(ConfigError, match=re.escape(f"--cache: cannot write to the folder '{tmp_path}' (Permission")):
        check_writable_folder(str(tmp_path), option="--cache")
    assert probed == [tmp_path, tmp_path] and not (tmp_path / "new").exists()


def test_an_address_where_no_ray_answers_is_refused_at_once():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"--address 127.0.0.1:{port}: no Ray cluster answers there"):
        check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - start < 5  # Ray itself retried for minutes, deaf to Ctrl-C
    for bad in ("nohost", "host:port", "host:0", "host:70000"):
        with pytest.raises(ConfigError, match="give 'auto', 'local' or the HOST:PORT"):
            check_reachable(bad)


# ---- bad inputs through the real entry points --------------------------------------------------------
@pytest.fixture
def bad(tmp_path: Path) -> dict[str, str]:
    """Paths a new user gets wrong: a file where a folder belongs and back, a data folder without the
    dataset, one with a damaged archive, a results folder that does not exist; and an experiment
    without rows yet (for the analysis scripts' other options)."""
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    (tmp_path / "exp" / "rows").mkdir(parents=True)
    return {"tmp": str(tmp_path), "exp": str(tmp_path / "exp"), "file": str(tmp_path / "a_file"), "folder_csv": str(tmp_path / "folder.csv"),
            "empty": str(tmp_path / "empty"), "damaged": str(tmp_path / "damaged"),
            "missing": str(tmp_path / "missing"), "store": str(tmp_path / "store")}


UNIT = ["--dataset", "digits", "--arch", "resnet18", "--cache", "{store}"]
CIFAR = ["--dataset", "cifar10", "--arch", "resnet18", "--cache", "{store}"]


@pytest.mark.parametrize("main, prog, argv, status, words", [
    (unit_main, "python -m miaray.unit", [*UNIT, "--device", "nonsense"], 2, ["--device 'nonsense'", "give cpu"]),
    (unit_main, "python -m miaray.unit", [*UNIT, "--artifacts", "{file}"], 2,
     ["--artifacts", "is a file, not a folder"]),
    (unit_main, "python -m miaray.unit", [*UNIT, "--out", "{folder_csv}"], 2, ["--out", "is a folder"]),
    (unit_main, "python -m miaray.unit", [*CIFAR, "--data-root", "{empty}"], 1,
     ["dataset 'cifar10': none of the accepted files were found in {empty}", "--data-root"]),
    (unit_main, "python -m miaray.unit", [*CIFAR, "--data-root", "{damaged}"], 1,
     ["{damaged}/cifar-10-python.tar.gz has md5", "MIARAY_ALLOW_CHECKSUM_MISMATCH"]),
    (full_grid_main, "full_grid.py", ["--address", "nohost", "--dry-run"], 2, ["--address", "HOST:PORT"]),
    (unknown_pruning_main, "unknown_pruning.py",
     ["--study", "method", "--methods", "l1_unstructured", "--sparsities", "0.5", "--dry-run"], 2,
     ["--study method", "give several --sparsities or --methods"]),
    (defense_search_main, "defense_search.py", ["--defense", "ppb", "--point", "lambda=0", "--dry-run"], 2,
     ["point lambda=0.0 is not valid", "> 0", "log-scaled, 0.25 to 64"]),
    (defense_search_main, "defense_search.py", ["--defense", "ppb", "--point", "lambda=nan", "--dry-run"], 2,
     ["point lambda=nan is not valid"]),
    (defense_search_main, "defense_search.py", ["--defense", "dp", "--point", "lambda=4", "--dry-run"], 2,
     ["['lambda'] not searched", "noise_multiplier"]),
    (defense_search_main, "defense_search.py", ["--defense", "ppb", "--sampler-seed", "-1", "--dry-run"], 2,
     ["--sampler-seed=-1", "[0, 4294967295]"]),
    (figures_main, "figures.py", ["{missing}", "--out", "{tmp}/figs"], 2, ["no experiment folder at {missing}"]),
    (figures_main, "figures.py", ["{exp}", "--out", "{file}"], 2, ["--out", "is a file, not a folder"]),
    (report_main, "report.py", ["{exp}", "--out", "{folder_csv}"], 2, ["--out", "is a folder"]),
    (claims_main, "claims.py", ["{missing}"], 2, ["no experiment folder at {missing}"]),
    (claims_main, "claims.py", ["{exp}", "--max-loss", "nan"], 2, ["--max-loss=nan is not valid", "[0, 1]"]),
    (claims_main, "claims.py", ["{exp}", "--out", "{file}/claims.csv"], 2, ["is a file, not a folder"]),
])
def test_bad_inputs_give_one_error_line_and_the_status(capsys, monkeypatch, bad, main, prog, argv, status, words):
    monkeypatch.setenv(OFFLINE_ENV, "1")
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    try:
        got = main([arg.format(**bad) for arg in argv])
    except SystemExit as exit:  # argparse's own exit, after its usage line
        got = exit.code
    err = capsys.readouterr().err
    assert got == status, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error: "), err
    for word in words:
        assert word.format(**bad) in last, last
    if status == 1:
        assert err.count("\n") == 1  # the one line, nothing else
    assert not Path(bad["store"], "events.jsonl").exists()  # nothing was built


def test_debug_on_a_real_entry_point_shows_the_traceback(monkeypatch, bad):
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(DatasetNotFoundError, match="cifar10"):
        unit_main([arg.format(**bad) for arg in CIFAR] + ["--data-root", bad["empty"], "--debug"])


def test_a_sweep_storage_that_is_a_file_is_refused_before_any_trial(ray_cluster, capsys, bad):
    address = ray_cluster.get_runtime_context().gcs_address
    with pytest.raises(SystemExit) as info:
        full_grid_main(["--datasets", "digits", "--methods", "l1_unstructured", "--sparsities", "0.5",
                        "--storage", bad["file"], "--address", address])
    assert info.value.code == 2
    assert f"--storage: '{bad['file']}' is a file, not a folder" in capsys.readouterr().err


# ---- regressions found by the bad inputs --------------------------------------------------------------
def test_a_failed_rerun_replaces_a_damaged_row_file(tmp_path):
    damaged = Path(results.write_unit_rows(experiment=tmp_path, unit_id="u", rows=[{"status": "ok", "x": 1.0}]))
    damaged.write_bytes(b"PAR1 cut short")
    path = results.write_unit_rows(experiment=tmp_path, unit_id="u", rows=[{"status": "failed", "error": "boom"}])
    assert path == str(damaged)  # it held no result worth keeping
    assert results.load(tmp_path)[["status", "error"]].to_dict("records") == [{"status": "failed", "error": "boom"}]


def test_a_search_whose_every_trial_failed_still_writes_its_table():
    cell = UnitConfig(dataset="cifar10", arch="resnet18", method="l1_unstructured", sparsity=0.7, defense="ppb")
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    trial.suggest_float("lambda", 0.25, 64.0, log=True)
    trial.set_user_attr("unit_id", cell.unit_id())
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    rows = pd.DataFrame(failed_rows(cell, "DatasetNotFoundError: dataset 'cifar10'"))
    table = trials_table(study, rows=rows)
    assert table[["trial", "state"]].to_dict("records") == [{"trial": 0, "state": "FAIL"}]


# ---- the exit path of a real process -------------------------------------------------------------------
def test_the_unit_command_exits_1_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    done = subprocess.run([sys.executable, "-m", "miaray.unit", "--dataset", "cifar10", "--arch", "resnet18",
                           "--data-root", str(tmp_path / "empty"), "--cache", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=120, env={**ENV, OFFLINE_ENV: "1"}, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("python -m miaray.unit: error: dataset 'cifar10'")


def test_ctrl_c_stops_a_sweep_with_status_130_and_one_line(ray_cluster, tmp_path):
    address = ray_cluster.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [sys.executable, str(ROOT / "sweeps" / "full_grid.py"), "--datasets", "digits", "--methods", "l1_unstructured",
         "--sparsities", "0.5", "--attacks", "conf", "--max-epochs", "1", "--shadows", "1", "--storage",
         str(tmp_path), "--address", address, "--cpus-per-trial", "1", "--gpus-per-trial", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    for line in driver.stdout:  # the line printed just before Tune starts its trials
        if "models to build" in line:
            break
    time.sleep(3)  # inside Tune's loop, where Tune used to catch Ctrl-C and end on Tuner.restore advice
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("full_grid.py: interrupted; cells with ok rows are kept; rerun the "
                                            "same command to run the others")
