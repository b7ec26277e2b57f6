#!/usr/bin/env python
"""Which samples pruning exposes: per target sample, how its membership score changes from the original to
the pruned target, and who those samples are.

    python analysis/exposure.py ~/miaray-results/full_grid-beyond [MORE_RESULTS...] [--out exposure/]

Read from the stored per-unit files (`scores/`: each attack's per-sample scores on both targets;
`signals/`: each sample's label and predicted class); no model is trained or queried again. Per unit (a
successful known-pruning Basic unit of the paper's split):

- the exposure attack: online LiRA where the unit scored both targets with it, else the offline LiRA,
  else the headline attack (SAMIA, else the most accurate): the first with per-sample scores on both
  targets;
- each target sample's change: its score on the pruned target minus on the original, on a scale without a
  ceiling (`unbounded`): online LiRA's log likelihood ratio as it is; for the offline LiRA, whose score
  log Phi(z) saturates at 0 for a sample already far above its OUT models, z itself: how far the
  sample's phi lies above the mean of the shadows that never trained on it, in units of their spread;
  other attacks' scores as they are;
- the null: what pruning does to a score with no membership behind it, the changes of the target's
  non-members. A member is exposed when its change exceeds the 95th percentile of the non-members'
  (NULL_QUANTILE): with no effect on members, 5% of them are; `excess` is the share above that;
- prediction changes: among members, whether the predicted class differs between the two targets, and
  the share exposed among members whose prediction changed against among the others;
- per class: the share of a class's members that are exposed.

Per cell (method, sparsity, fine-tuned or not): the seed mean of each unit figure with its 95% interval.
With --out: `exposure_summary.csv` (per cell), `exposure_units.csv` (per unit), `exposure_classes.csv`
(per cell and class), `exposure_samples.csv` (every member's change and flags), and per cell a histogram of
the changes (`exposure_hist_*.png`) and, for image datasets whose files are at hand, a grid of the most
exposed members (`exposure_grid_*.png`; ranked by how far their change exceeds the null threshold, in
units of the non-members' interquartile range, over every seed).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root (and `analysis`) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.special import ndtri  # noqa: E402

from analysis.data import (SCORES_DIR, SIGNALS_DIR, Experiment, Skipped, load_for_command, main_grid,  # noqa: E402
                           pruned)
from miaray.cli import HelpFormatter, add_debug_option, check_output_file, entry_point  # noqa: E402
from miaray.data import load_dataset  # noqa: E402
from miaray.stats import t_interval  # noqa: E402
from miaray.unknown_pruning import headline_attack  # noqa: E402

NULL_QUANTILE = 0.95
# |z| at which z is cut: above about 13 the stored float32 log Phi(z) underflows to 0, so every sample that
# far above its OUT models reads the same (and below -12 none is near being taken for a member).
Z_LIMIT = 12.0
PREFERRED = ("lira", "lira_offline")  # likelihood-ratio scores, where the unit has them
CELL = ["dataset", "arch", "width", "method", "sparsity", "finetune"]
UNIT_FIGURES = ("share_exposed", "excess", "exposed_if_prediction_changed", "exposed_if_prediction_kept",
                "prediction_changed")
GRID_SIZE = 24  # members shown per cell


def exposure_attack(scores: pd.DataFrame, rows: pd.DataFrame) -> str | None:
    """The attack whose per-sample scores measure exposure in a unit (module docstring), or None."""
    on_both = {a for a, models in scores.groupby("attack")["target_model"] if {"pruned", "original"} <= set(models)}
    for attack in (*PREFERRED, headline_attack(rows)):
        if attack in on_both:
            return attack
    return None


def unbounded(attack: str, scores: np.ndarray) -> np.ndarray:
    """`attack`'s scores on the scale exposure compares (module docstring): the offline LiRA's log Phi(z)
    back to z (through the upper tail where Phi(z) rounds to 1: z = -ndtri(1 - Phi(z))), within
    +-Z_LIMIT; every other attack's scores unchanged."""
    scores = np.asarray(scores, dtype=np.float64)
    if attack != "lira_offline":
        return scores
    with np.errstate(divide="ignore", over="ignore"):
        z = np.where(scores > math.log(0.5), -ndtri(-np.expm1(scores)), ndtri(np.exp(scores)))
    return np.clip(z, -Z_LIMIT, Z_LIMIT)


def unit_exposure(scores: pd.DataFrame, signals: pd.DataFrame | None, attack: str) -> pd.DataFrame:
    """Per target sample of one unit: `change` of the `attack`'s score (pruned - original, `unbounded`), `member`, the
    null `threshold` (NULL_QUANTILE of the non-members' changes), `exposed` (a member above it), `strength`
    ((change - threshold) over the non-members' interquartile range), `label` and `prediction_changed`
    (from `signals`, NaN without it)."""
    mine = scores[scores["attack"] == attack]
    mine = mine.assign(score=unbounded(attack, mine["score"].to_numpy())).pivot(
        index="sample", columns="target_model", values="score")
    member = scores[scores["attack"] == attack].drop_duplicates("sample").set_index("sample")["member"]
    frame = pd.DataFrame({"change": (mine["pruned"] - mine["original"]).astype(float), "member": member})
    frame = frame[np.isfinite(frame["change"])]
    null = frame.loc[~frame["member"], "change"]
    threshold = float(null.quantile(NULL_QUANTILE))
    spread = float(null.quantile(0.75) - null.quantile(0.25)) or 1.0
    frame = frame.assign(threshold=threshold, exposed=frame["member"] & (frame["change"] > threshold),
                         strength=(frame["change"] - threshold) / spread)
    if signals is not None and {"sample", "predicted"} <= set(signals.columns):
        predicted = signals.pivot(index="sample", columns="target_model", values="predicted")
        labels = signals.drop_duplicates("sample").set_index("sample")["label"]
        frame = frame.join(labels).assign(prediction_changed=predicted["pruned"] != predicted["original"])
    else:
        frame = frame.assign(label=np.nan, prediction_changed=np.nan)
    return frame.reset_index()


def _shares(samples: pd.DataFrame) -> dict[str, float]:
    members = samples[samples["member"]]
    share = float(members["exposed"].mean())
    figures = {"share_exposed": share, "excess": share - (1 - NULL_QUANTILE), "prediction_changed": math.nan,
               "exposed_if_prediction_changed": math.nan, "exposed_if_prediction_kept": math.nan}
    if members["prediction_changed"].notna().all():  # a signals/ file told the predictions
        changed = members["prediction_changed"].astype(bool)
        figures["prediction_changed"] = float(changed.mean())
        if changed.any():
            figures["exposed_if_prediction_changed"] = float(members.loc[changed, "exposed"].mean())
        if (~changed).any():
            figures["exposed_if_prediction_kept"] = float(members.loc[~changed, "exposed"].mean())
    return figures


def exposure(exp: Experiment) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per unit: its cell, seed, attack and UNIT_FIGURES; per member of every unit: its cell, seed, unit,
    sample, label, change, threshold, strength, exposed, prediction_changed). Skipped without a unit that
    has per-sample scores on both targets."""
    per_unit, samples = _exposure(exp)
    return per_unit, samples[samples["member"]].reset_index(drop=True)


def _exposure(exp: Experiment) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`exposure`, with every sample of every unit: its members and its non-members."""
    grid = main_grid(exp.rows) if len(exp.rows) else exp.rows
    units = pruned(grid).drop_duplicates("unit_id") if len(grid) else grid
    with_scores = units[units["unit_id"].isin(set(exp.score_files))] if len(units) else units
    if with_scores.empty:
        raise Skipped(f"no successful known-pruning Basic unit with a {SCORES_DIR}/ file (rows written by units "
                      "from before per-sample scores were kept have none): run e.g. "
                      "python sweeps/full_grid.py --preset beyond")
    lines, members = [], []
    for _, unit in with_scores.iterrows():
        scores = exp.read_unit_file(SCORES_DIR, unit["unit_id"])
        attack = exposure_attack(scores, grid[grid["unit_id"] == unit["unit_id"]])
        if attack is None:
            continue
        signals = exp.read_unit_file(SIGNALS_DIR, unit["unit_id"]) if unit["unit_id"] in exp.signal_files else None
        samples = unit_exposure(scores, signals, attack)
        cell = {c: unit[c] for c in [*CELL, "seed", "unit_id"]}
        lines.append({**cell, "attack": attack, "n_members": int(samples["member"].sum()), **_shares(samples)})
        members.append(samples.assign(**cell, attack=attack))
    if not lines:
        raise Skipped("no unit has per-sample scores of one attack on both its pruned and its original target")
    return pd.DataFrame(lines), pd.concat(members, ignore_index=True)


def summary_table(per_unit: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the attack(s), seeds, and per UNIT_FIGURES the mean over seeds with its 95% interval."""
    lines = []
    for key, part in per_unit.groupby(CELL, sort=True, dropna=False):
        line = {**dict(zip(CELL, key)), "attack": ",".join(sorted(set(part["attack"]))), "n_seeds": part["seed"].nunique()}
        for figure in UNIT_FIGURES:
            mean, low, high, _ = t_interval(part[figure].dropna())
            line.update({figure: mean, f"{figure}_ci_low": low, f"{figure}_ci_high": high})
        lines.append(line)
    return pd.DataFrame(lines)


def class_table(members: pd.DataFrame) -> pd.DataFrame:
    """Per cell and class: members over all seeds and the share of them exposed."""
    labelled = members.dropna(subset=["label"]).astype({"label": int})
    return labelled.groupby([*CELL, "label"], dropna=False).agg(
        members=("exposed", "size"), share_exposed=("exposed", "mean")).reset_index()


def _cell_name(key: tuple) -> str:
    values = dict(zip(CELL, key))
    tuned = "finetuned" if values["finetune"] else "not-finetuned"
    return f"{values['dataset']}_{values['arch']}_w{values['width']:g}_{values['method']}_{values['sparsity']:g}_{tuned}"


def draw_histograms(per_unit: pd.DataFrame, samples: pd.DataFrame, out: Path) -> list[Path]:
    """Per cell, its first seed's unit: the changes of members and non-members (`samples`, every sample of
    every unit), and the null threshold."""
    paths = []
    for key, part in per_unit.sort_values("seed").groupby(CELL, sort=True, dropna=False):
        unit = part.iloc[0]
        mine = samples[samples["unit_id"] == unit["unit_id"]]
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        bins = np.histogram_bin_edges(mine["change"], bins=50)
        for is_member, color, name in ((False, "tab:gray", "non-members"), (True, "tab:red", "members")):
            ax.hist(mine.loc[mine["member"] == is_member, "change"], bins=bins, alpha=0.55, color=color, label=name)
        ax.axvline(mine["threshold"].iloc[0], color="k", linestyle="--",
                   label=f"non-members' {NULL_QUANTILE:.0%} quantile")
        ax.set_xlabel(f"{unit['attack']} score: pruned - original")
        ax.set_ylabel("samples")
        ax.set_title(f"{_cell_name(key)}, seed {unit['seed']}: {unit['share_exposed']:.1%} of members exposed",
                     fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / f"exposure_hist_{_cell_name(key)}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def draw_grids(members: pd.DataFrame, out: Path, *, data_root: str | None = None) -> tuple[list[Path], list[str]]:
    """Per cell of an image dataset: its GRID_SIZE most exposed members over every seed, with label, seed and
    strength. Returns (the images, a note per dataset whose files are not at hand)."""
    paths, notes = [], []
    for dataset, part in members.groupby("dataset"):
        try:
            data = load_dataset(dataset, root=data_root)
        except (FileNotFoundError, ValueError) as error:
            notes.append(f"{dataset}: no image grid ({' '.join(str(error).split())[:200]})")
            continue
        if data.x.ndim != 4:
            continue
        for key, cell in part.groupby(CELL, sort=True, dropna=False):
            top = cell[cell["exposed"]].nlargest(GRID_SIZE, "strength")
            if top.empty:
                continue
            columns = 8
            rows = math.ceil(len(top) / columns)
            fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.45), squeeze=False)
            for ax in axes.flat:
                ax.axis("off")
            for ax, (_, sample) in zip(axes.flat, top.iterrows()):
                image = data.x[int(sample["sample"])].permute(1, 2, 0).numpy()
                image = (image - image.min()) / (np.ptp(image) or 1.0)
                ax.imshow(image.squeeze(), cmap="gray" if image.shape[2] == 1 else None)
                ax.set_title(f"y={int(sample['label']) if pd.notna(sample['label']) else '?'} s{sample['seed']} "
                             f"+{sample['strength']:.1f}", fontsize=6)
            fig.suptitle(f"most exposed members: {_cell_name(key)}", fontsize=8)
            fig.tight_layout()
            paths.append(out / f"exposure_grid_{_cell_name(key)}.png")
            fig.savefig(paths[-1], dpi=110)
            plt.close(fig)
    return paths, notes


def write_exposure(exp: Experiment, out: Path, *, data_root: str | None = None) -> tuple[pd.DataFrame, list[Path],
                                                                                       list[str]]:
    """Every table and figure of the module docstring into `out`; returns (the summary, the figures, notes)."""
    per_unit, samples = _exposure(exp)
    members = samples[samples["member"]].reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(per_unit)
    table.to_csv(out / "exposure_summary.csv", index=False)
    per_unit.to_csv(out / "exposure_units.csv", index=False)
    class_table(members).to_csv(out / "exposure_classes.csv", index=False)
    members.to_csv(out / "exposure_samples.csv", index=False)
    grids, notes = draw_grids(members, out, data_root=data_root)
    return table, [*draw_histograms(per_unit, samples, out), *grids], notes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="exposure.py", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("results", nargs="+", help="experiment directories (<storage>/<name>, holding rows/ and scores/)")
    p.add_argument("--out", type=Path, help="folder for the tables and figures (default: print the summary only)")
    p.add_argument("--data-root", help="dataset folder for the image grid (default: $MIARAY_DATA, else "
                                       "~/.cache/miaray/data; embedded datasets need none)")
    return add_debug_option(p)


@entry_point(prog="exposure.py")
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    checks = [lambda: check_output_file(args.out / "exposure_summary.csv", option="--out")] if args.out else []
    exp = load_for_command(parser, args.results, checks=checks)
    try:
        if args.out:
            table, figures, notes = write_exposure(exp, args.out, data_root=args.data_root)
        else:
            table, figures, notes = summary_table(exposure(exp)[0]), [], []
    except Skipped as reason:
        parser.exit(1, f"exposure.py: {reason}\n")
    for note in [*exp.notes, *notes]:
        print(f"note: {note}")
    shown = table[[*CELL, "attack", "n_seeds", *UNIT_FIGURES]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for path in figures:
        print(f"wrote {path}")
    if args.out:
        print(f"wrote {args.out}/exposure_summary.csv, exposure_units.csv, exposure_classes.csv, exposure_samples.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
