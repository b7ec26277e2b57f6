"""Result files: one Parquet file per unit, replaced on rerun, read by pandas without Ray."""

import multiprocessing as mp
import time
import warnings

import pandas as pd
import pytest

from miaray import results
from miaray.results import compact, load, write_unit_rows


def _rows(unit_id, n, status="ok", **extra):
    return [{"unit_id": unit_id, "attack": f"a{i}", "attack_acc": 0.5 + i / 100, "status": status, **extra}
            for i in range(n)]


def test_roundtrip_and_rerun_replaces(tmp_path):
    exp = tmp_path / "exp"
    results.write_unit_rows(experiment=exp, unit_id="u1", rows=_rows("u1", 3))
    results.write_unit_rows(experiment=exp, unit_id="u2", rows=_rows("u2", 2, status="failed", error="boom"))
    results.write_unit_rows(experiment=exp, unit_id="u1", rows=_rows("u1", 3, note="rerun"))  # replaces
    df = results.load(exp)
    assert len(df) == 5
    assert sorted(df["unit_id"].value_counts().items()) == [("u1", 3), ("u2", 2)]
    assert (df.loc[df["unit_id"] == "u1", "note"] == "rerun").all()
    assert df.loc[df["unit_id"] == "u2", "error"].tolist() == ["boom", "boom"]
    assert sorted(p.name for p in (exp / "rows").iterdir()) == ["u1.parquet", "u2.parquet"]


def test_a_renamed_column_is_read_under_its_current_name_from_old_and_new_files(tmp_path):
    exp = tmp_path / "exp"
    results.write_unit_rows(experiment=exp, unit_id="old", rows=_rows("old", 2, n_references=4))  # before the rename
    results.write_unit_rows(experiment=exp, unit_id="new", rows=_rows("new", 1, models_used=8))
    df = load(exp)
    assert "n_references" not in df.columns
    assert df.set_index(["unit_id", "attack"])["models_used"].to_dict() == {
        ("old", "a0"): 4, ("old", "a1"): 4, ("new", "a0"): 8}
    budget = pd.DataFrame({"attack": ["lira"], "n_references": [2]})
    assert results.current_columns(budget).columns.tolist() == ["attack", "models_used"]


def test_a_missing_experiment_is_an_error_and_one_without_units_is_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no experiment folder at {tmp_path / 'nothing'}"):
        results.load(tmp_path / "nothing")
    (tmp_path / "fresh").mkdir()  # a sweep that has not finished a unit yet
    assert results.load(tmp_path / "fresh").empty
    (tmp_path / "exp" / "rows").mkdir(parents=True)
    assert results.load(tmp_path / "exp").empty


def test_temporary_files_are_ignored(tmp_path):
    exp = tmp_path / "exp"
    results.write_unit_rows(experiment=exp, unit_id="u1", rows=_rows("u1", 2))
    (exp / "rows" / ".u2.0123.tmp").write_bytes(b"half a parquet file")  # a writer killed mid-write
    assert len(results.load(exp)) == 2


def _rewrite(exp: str, times: int) -> None:
    for i in range(times):
        results.write_unit_rows(experiment=exp, unit_id="busy", rows=_rows("busy", 50, step=i))


def test_load_while_a_unit_is_being_rewritten(tmp_path):
    exp = str(tmp_path / "exp")
    results.write_unit_rows(experiment=exp, unit_id="busy", rows=_rows("busy", 50, step=-1))
    writer = mp.get_context("spawn").Process(target=_rewrite, args=(exp, 100))
    writer.start()
    sizes = []
    while writer.is_alive():
        sizes.append(len(results.load(exp)))  # never a torn file, never two copies
    writer.join()
    assert writer.exitcode == 0
    assert len(sizes) > 5 and set(sizes) == {50}
    assert results.load(exp)["step"].eq(99).all()


def test_snapshot_gives_the_same_rows_and_unit_files_stay_the_truth(tmp_path):
    exp = tmp_path / "exp"
    for i in range(5):
        write_unit_rows(experiment=exp, unit_id=f"u{i}", rows=[{"unit_id": f"u{i}", "attack": "conf", "attack_acc": i / 10}])
    write_unit_rows(experiment=exp, unit_id="failed", rows=[{"unit_id": "failed", "attack": "conf", "status": "failed"}])
    before = load(exp)
    compact(exp)
    after = load(exp)
    key = ["unit_id"]
    pd.testing.assert_frame_equal(before.sort_values(key).reset_index(drop=True),
                                  after.sort_values(key).reset_index(drop=True))
    # A unit rerun after the snapshot replaces its rows; a new unit appears; nothing is duplicated.
    time.sleep(0.01)
    write_unit_rows(experiment=exp, unit_id="u2", rows=[{"unit_id": "u2", "attack": "conf", "attack_acc": 0.99}])
    write_unit_rows(experiment=exp, unit_id="u9", rows=[{"unit_id": "u9", "attack": "conf", "attack_acc": 0.5}])
    df = load(exp)
    assert sorted(df.unit_id) == ["failed", "u0", "u1", "u2", "u3", "u4", "u9"]
    assert df.set_index("unit_id").loc["u2", "attack_acc"] == 0.99


def _damage(path, how):
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"PAR1 not really parquet")


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_an_unreadable_unit_file_is_skipped_with_a_warning_naming_it(tmp_path, how):
    exp = tmp_path / "exp"
    for i in range(4):
        write_unit_rows(experiment=exp, unit_id=f"u{i}", rows=_rows(f"u{i}", 3))
    bad = exp / "rows" / "u2.parquet"
    _damage(bad, how)
    with pytest.warns(results.UnreadableResultFile, match=f"{bad}: unreadable .*skipped"):
        df = load(exp)
    assert sorted(df["unit_id"].unique()) == ["u0", "u1", "u3"] and len(df) == 9
    with pytest.warns(results.UnreadableResultFile, match=f"{bad}: unreadable"):
        compact(exp)  # the snapshot holds the readable units; the damaged file is still reported
    with pytest.warns(results.UnreadableResultFile, match=f"{bad}: unreadable"):
        assert sorted(load(exp)["unit_id"].unique()) == ["u0", "u1", "u3"]


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_a_damaged_snapshot_falls_back_to_the_unit_files(tmp_path, how):
    exp = tmp_path / "exp"
    for i in range(3):
        write_unit_rows(experiment=exp, unit_id=f"u{i}", rows=_rows(f"u{i}", 2))
    compact(exp)
    _damage(exp / results.SNAPSHOT, how)
    with pytest.warns(results.UnreadableResultFile, match=f"{exp / results.SNAPSHOT}: unreadable .*unit files instead"):
        df = load(exp)
    assert sorted(df["unit_id"]) == ["u0", "u0", "u1", "u1", "u2", "u2"]
    with pytest.warns(results.UnreadableResultFile):  # compaction reads the snapshot too, then rewrites it
        compact(exp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load(exp)) == 6
