"""Wrong folders and names are clear errors, --resume checks before Ray starts, outputs are never written
through a symbolic link, errors name the options typed, and dry runs say what they cost (issue 22, items 4
and 5). Through the real scripts, as separate processes: exit status, the one error line, what is left
on disk."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from miaray import results
from miaray.unit import check_out

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENV.pop("RAY_ADDRESS", None)  # a script that wrongly went on to connect must not find the tests' Ray
NOWHERE = "127.0.0.1:1"  # --address where no Ray answers: a script that started Ray would fail otherwise


def run(script: str, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    path = [sys.executable, "-m", script] if script.startswith("miaray.") else [sys.executable, str(ROOT / script)]
    return subprocess.run([*path, *args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)


def one_error_line(done: subprocess.CompletedProcess, prog: str, status: int = 2) -> str:
    """The one `prog: error: ...` line a refused command ends with (after argparse's usage, for status 2)."""
    assert done.returncode == status, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith(f"{prog}: ")]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), done.stderr
    return lines[0]


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """A storage folder as sweeps leave it: two experiments (one finished a unit, one has Tune's state
    only) and the model store."""
    root = tmp_path / "storage"
    results.write_unit_rows(experiment=root / "full_grid-quick", unit_id="u1",
                            rows=[{"unit_id": "u1", "status": "ok", "target_model": "pruned", "attack": "conf",
                                   "attack_acc": 0.6}])
    (root / "full_grid-claims" / "tune").mkdir(parents=True)
    (root / "cache").mkdir()
    return root


# ---- wrong folders -----------------------------------------------------------------------------------
def test_a_storage_root_is_an_error_naming_the_experiments_in_it(storage: Path, tmp_path: Path):
    with pytest.raises(results.NotAnExperiment, match="holding 2 experiment.*full_grid-claims, full_grid-quick"):
        results.load(storage)
    page = tmp_path / "report.html"
    for script, out in (("analysis/report.py", ["--out", str(page)]), ("analysis/claims.py", []),
                        ("analysis/figures.py", ["--out", str(tmp_path / "figs")])):
        line = one_error_line(run(script, str(storage), *out), Path(script).name)
        assert f"{storage} is not an experiment folder" in line and "full_grid-claims, full_grid-quick" in line
        assert f"e.g. {storage}/full_grid-claims" in line
    assert not page.exists() and not (tmp_path / "figs").exists()  # nothing written


def test_an_experiments_rows_folder_is_an_error_naming_the_experiment(storage: Path, tmp_path: Path):
    rows = storage / "full_grid-quick" / "rows"
    with pytest.raises(results.NotAnExperiment, match="rows/ folder, not the experiment"):
        results.load(rows)
    line = one_error_line(run("analysis/report.py", str(rows), "--out", str(tmp_path / "r.html")), "report.py")
    assert f"{rows} is an experiment's rows/ folder" in line and f"give the folder that holds it, {rows.parent}" in line
    assert not (tmp_path / "r.html").exists()


def test_a_rows_folder_of_other_parquet_files_is_an_error(tmp_path: Path):
    exp = tmp_path / "exp"
    (exp / "rows").mkdir(parents=True)
    pd.DataFrame({"price": [1.0, 2.0]}).to_parquet(exp / "rows" / "prices.parquet")
    with pytest.warns(results.UnreadableResultFile, match="prices.parquet: not a miaray result file"):
        with pytest.raises(results.NotAnExperiment, match="holds no result rows"):
            results.load(exp)
    line = one_error_line(run("analysis/report.py", str(exp), "--out", str(tmp_path / "r.html")), "report.py")
    assert f"{exp}/rows holds no result rows" in line and "prices.parquet" in line
    # Beside result files, such a file is skipped with a warning naming it; the results are loaded.
    results.write_unit_rows(experiment=exp, unit_id="u1", rows=[{"unit_id": "u1", "status": "ok"}])
    with pytest.warns(results.UnreadableResultFile, match="prices.parquet"):
        assert results.load(exp)["unit_id"].tolist() == ["u1"]


def test_a_folder_of_other_files_is_an_error_and_an_experiment_not_yet_started_is_empty(tmp_path: Path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(results.NotAnExperiment, match="no rows/ in it.*cat.jpg"):
        results.load(tmp_path / "photos")
    (tmp_path / "fresh" / "tune").mkdir(parents=True)  # a sweep whose first unit has not finished
    df = results.load(tmp_path / "fresh")
    ok = df[df["status"] == "ok"]  # the documented first query: nothing, and no KeyError
    assert ok.empty and {"target_model", "attack", "attack_acc", "seed"} <= set(df.columns)
    done = run("analysis/report.py", str(tmp_path / "fresh"), "--out", str(tmp_path / "r.html"))
    assert done.returncode == 0 and "note:" in done.stdout and "no unit has finished there" in done.stdout


# ---- --resume ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script, extra", [("sweeps/full_grid.py", []), ("sweeps/unknown_pruning.py", []),
                                           ("sweeps/defense_search.py", ["--defense", "ppb"])])
@pytest.mark.parametrize("dry_run", [True, False])
def test_resume_of_a_name_that_never_ran_is_refused_before_ray_and_leaves_nothing(storage: Path, script, extra,
                                                                                 dry_run):
    before = sorted(p.relative_to(storage) for p in storage.rglob("*"))
    done = run(script, *extra, "--resume", "--name", "full_grid-quik", "--storage", str(storage),
               "--address", NOWHERE, *(["--dry-run"] if dry_run else []))
    line = one_error_line(done, Path(script).name)
    assert f"--resume: no sweep ran in {storage}/full_grid-quik yet" in line
    assert f"{storage} holds the experiments full_grid-claims, full_grid-quick" in line
    assert "plan:" not in done.stdout and "search:" not in done.stdout  # refused before planning
    assert "Ray" not in done.stdout + done.stderr.replace("Ray Tune", "")  # nor started nor joined Ray
    assert sorted(p.relative_to(storage) for p in storage.rglob("*")) == before  # nothing left behind


def test_resume_of_an_experiment_that_ran_plans_as_before(storage: Path):
    done = run("sweeps/full_grid.py", "--resume", "--name", "full_grid-claims", "--storage", str(storage), "--dry-run")
    assert done.returncode == 0 and "plan:" in done.stdout, done.stderr


# ---- symbolic links --------------------------------------------------------------------------------------
def test_outputs_are_not_written_through_a_symbolic_link(storage: Path, tmp_path: Path):
    target = tmp_path / "thesis.tex"
    target.write_text("three years of work")
    link = tmp_path / "report.html"
    link.symlink_to(target)
    experiment = str(storage / "full_grid-quick")
    line = one_error_line(run("analysis/report.py", experiment, "--out", str(link)), "report.py")
    assert f"--out '{link}' is a symbolic link to '{target}'" in line
    csv_link = tmp_path / "claims.csv"
    csv_link.symlink_to(target)
    line = one_error_line(run("analysis/claims.py", experiment, "--out", str(csv_link)), "claims.py")
    assert "is a symbolic link" in line
    with pytest.raises(Exception, match="is a symbolic link"):
        check_out(str(csv_link))  # python -m miaray.unit --out, checked before the unit runs
    assert target.read_text() == "three years of work" and link.is_symlink()
    # The file itself, named: written.
    done = run("analysis/report.py", experiment, "--out", str(tmp_path / "real.html"))
    assert done.returncode == 0 and (tmp_path / "real.html").is_file(), done.stderr


# ---- errors name the options typed ---------------------------------------------------------------------------
@pytest.mark.parametrize("script, args, words", [
    ("sweeps/full_grid.py", ["--sparsities", "70"], ["--sparsities=70.0 is not valid", "(0, 1)"]),
    ("sweeps/full_grid.py", ["--attacks", "conf,lira", "--references", "-1"], ["--references=-1 is not valid"]),
    ("sweeps/full_grid.py", ["--attacks", "lira", "--references", "3"], ["needs an even --references >= 2, got 3"]),
    ("sweeps/full_grid.py", ["--seeds", "-1"], ["--seeds=-1 is not valid"]),
    ("sweeps/full_grid.py", ["--shadows", "1", "--attacks", "rmia_offline"], ["it needs --shadows >= 2"]),
    ("sweeps/full_grid.py", ["--defenses", "ppb", "--defense-param", "lambda=-1"],
     ["--defense-param lambda=-1.0 is not valid"]),
    ("sweeps/unknown_pruning.py", ["--splits", "45/45/10,60/30/10"], ["--splits=45/45/10,60/30/10: this study runs one"]),
    ("sweeps/defense_search.py", [], ["--defense is required", "ppb, dp, adv"]),
    ("sweeps/defense_search.py", ["--defense", "ppb", "--sampler-seed", "-1"], ["--sampler-seed=-1 is not valid"]),
    ("miaray.unit", ["--dataset", "digits", "--arch", "resnet18", "--sparsity", "70"], ["--sparsity=70.0 is not valid"]),
    ("miaray.unit", ["--dataset", "digits", "--arch", "resnet18", "--attacks", "lira", "--references", "-1"],
     ["--references=-1 is not valid"]),
    ("miaray.unit", ["--dataset", "digits", "--arch", "resnet18", "--shadows", "0"], ["--shadows=0 is not valid"]),
    ("miaray.unit", ["--dataset", "digits", "--arch", "resnet18", "--defense", "ppb", "--defense-param", "alpha=4"],
     ["--defense-param 'alpha' is not valid for ppb; choose one of: lambda"]),
])
def test_errors_name_the_option_not_the_field(tmp_path: Path, script, args, words):
    unit = script == "miaray.unit"
    done = run(script, *args, *(["--cache", str(tmp_path / "store")] if unit else
                                ["--dry-run", "--storage", str(tmp_path / "results")]))
    line = one_error_line(done, "python -m miaray.unit" if unit else Path(script).name)
    for word in words:
        assert word in line, line
    # No internal field name, and no defense the user did not type.
    assert not re.search(r"(?<![-\w])(sparsity=|seed=|num_references|num_shadows|defense_params|sampler_seed)", line)
    assert "'basic'" not in line
    assert not (tmp_path / "results").exists() and not (tmp_path / "store").exists()


# ---- what a dry run costs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("script, args, warned, words", [
    ("sweeps/full_grid.py", ["--preset", "quick"], False,
     ["trainings: 54 models (6 originals, 48 pruned and fine-tuned), at most 3,000 epochs in all"]),
    ("sweeps/full_grid.py", ["--preset", "paper"], False, ["trainings: 1,620 models", "at most 82,350 epochs"]),
    ("sweeps/full_grid.py", ["--preset", "quick", "--max-epochs", "100000"], True,
     ["up to 100,000 epochs per model"]),
    ("sweeps/full_grid.py", ["--preset", "paper", "--seeds", "0,1,2"], True, ["4,860 models"]),
    ("sweeps/unknown_pruning.py", ["--preset", "paper", "--seeds", "0,1"], True, ["models for up to"]),
    ("sweeps/defense_search.py", ["--defense", "ppb"], False, ["trainings: at most"]),
    ("sweeps/defense_search.py", ["--defense", "ppb", "--trials", "100000", "--concurrency", "100000"], True,
     ["100,000 trials", "CPUs at once"]),
])
def test_dry_runs_count_models_and_trainings_and_warn_past_the_threshold(tmp_path: Path, script, args, warned, words):
    done = run(script, *args, "--dry-run", "--storage", str(tmp_path / "results"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trainings:" in done.stdout
    warnings = [line for line in done.stdout.splitlines() if line.startswith("warning: this plan is costly")]
    assert len(warnings) == (1 if warned else 0), done.stdout[-2000:]
    for word in words:
        assert word in done.stdout, done.stdout[-2000:]
    assert not (tmp_path / "results").exists()
