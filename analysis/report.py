#!/usr/bin/env python
"""One self-contained HTML page summarising experiments: headline tables, defense fronts, what defenses
buy back, all figures.

    python analysis/report.py ~/miaray-results/full_grid-quick --out report.html

The page needs no other file: figures are embedded as base64 PNG data URIs, styles are inline.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import sys
import tempfile
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: make the repository root (and `analysis`) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from analysis.claims import NOT_RUN, claims_table, verdict_counts  # noqa: E402
from analysis.exposure import NULL_QUANTILE, write_exposure  # noqa: E402
from analysis.data import (SETTINGS, Experiment, Skipped, load_for_command, settings_groups,  # noqa: E402
                           settings_label, settings_suffix)
from analysis.figures import (DEFENSE_FRONT_FIGURE, DEFENSE_FRONT_TABLE, fig_defense_front, summary,  # noqa: E402
                              write_figures)
from analysis.tables import (cell_table, defense_front_points, defense_front_table, defense_fronts,  # noqa: E402
                             defense_points, hyperparameters, with_intervals)
from miaray.cli import HelpFormatter, add_debug_option, check_output_file, entry_point  # noqa: E402

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.skip { color: #8a5a00; } .error { color: #b00020; }
"""
FLOAT = "{:.4f}".format


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=FLOAT, na_rep="", border=0)


def _section(title: str, make: Callable[[], str]) -> str:
    """A titled section; a missing input becomes a one-line note instead of the content."""
    try:
        body = make()
    except Skipped as reason:
        body = f'<p class="skip">Skipped: {html.escape(str(reason))}</p>'
    return f"<h2>{html.escape(title)}</h2>\n{body}"


INTERVALS = ("Numbers are means over seeds with their Student-t 95% interval, <code>mean [low, high]</code> "
             "(a seed's rows averaged first; the mean alone with one seed); <code>n_seeds</code> says over how many.")


def headline(exp: Experiment) -> str:
    """Per model: original vs pruned utility and attack success, and the best attack."""
    table = cell_table(exp.rows)
    parts = [f"<p>Known pruning, Basic defense. {INTERVALS} <code>conf_org_acc</code>: the unpruned target "
             "attacked with Conf (the paper's Conf (Org.)); <code>best_attack</code>: the strongest attack on the "
             "pruned target by mean accuracy, <code>best_attack_org_acc</code> the same attack on the unpruned "
             "target (like with like; blank where it did not run there); <code>best_tpr_at_fpr_0.01</code> and "
             "<code>best_tpr_at_fpr_0.001</code>: its TPR at 1% / 0.1% FPR, blank where the target has too few "
             "non-members to measure that FPR (fewer than 100 / 1,000, e.g. 0.1% on digits' 405).</p>"]
    for (dataset, arch, width), part in table.groupby(["dataset", "arch", "width"], dropna=False):
        parts.append(f"<h3>{html.escape(dataset)} / {html.escape(arch)} / width {width:g}</h3>"
                     + _table(with_intervals(part.drop(columns=["dataset", "arch", "width"]))))
    return "\n".join(parts)


def fronts(exp: Experiment, *, adaptive: bool) -> str:
    """Each defense's Pareto front (max mean test accuracy, min mean attack accuracy) per cell."""
    points = defense_points(exp.rows, adaptive=adaptive)
    front = defense_fronts(points).copy()
    front["hyperparameters"] = front.apply(hyperparameters, axis=1)
    settings = [c for c in SETTINGS if c in front.columns]  # where units differ in one (tables.kept_apart)
    keys = [*settings, "dataset", "arch", "width", "method", "sparsity", "defense", "hyperparameters"]
    values = [c for v in ("target_test_acc", "attack_acc", "epsilon") for c in (v, f"{v}_ci_low", f"{v}_ci_high")]
    front = front[[*keys, *values, "n_seeds"]].sort_values(keys[:-1] + ["target_test_acc"], ignore_index=True)
    dropped = int(points["paper_dropped"].sum())
    return (f"<p>Attack: {html.escape(str(points['attack'].iloc[0]))}. {INTERVALS} The fronts are taken on the "
            f"means. {dropped} of {len(points)} points are left out before, by the paper's rule (a mean below 75% "
            "of Basic's test accuracy, or leakier than Basic).</p>" + _table(with_intervals(front)))


def _settings_of(row: pd.Series) -> str:
    """' [max_epochs 3]' for a row of a table made per setting (tables.kept_apart), else ''."""
    setting = {c: row[c] for c in SETTINGS if c in row.index}
    return f" [{settings_label(setting)}]" if setting else ""


def _claim_rows(table: pd.DataFrame) -> list[str]:
    """The tested claim rows as a table, then the commands of those not run."""
    tested = table[table["verdict"] != NOT_RUN].drop(columns=["command"])
    parts = [_table(tested) if len(tested) else ""]
    missing = table[table["verdict"] == NOT_RUN]
    if len(missing):
        parts.append("<h3>Not run</h3><ul>" + "".join(
            f"<li>{html.escape(r['claim'])}{html.escape(_settings_of(r))} ({html.escape(r['statement'])}): "
            f"{html.escape(r['statistic'])}; "
            f"<code>{html.escape(r['command'])}</code></li>" for _, r in missing.iterrows()) + "</ul>")
    return parts


def claims(exp: Experiment) -> str:
    """The paper's claims as verdicts (analysis/claims.py), then the commands for those not run."""
    table = claims_table(exp)
    intro = (f"<p>{html.escape(verdict_counts(table))}. Each row is an effect with its 95% interval: "
             "<b>holds</b> when the interval lies entirely on the claim's side of the threshold, "
             "<b>contradicted</b> when entirely on the other side, <b>inconclusive</b> otherwise (and with one seed, "
             "which gives no interval). The statistic of each claim is in its row and in "
             "<code>analysis/claims.py</code>.</p>")
    return "\n".join([intro, *_claim_rows(table)])


# The claims about defenses the section "What defenses buy back" repeats (those that exist: C5a, C5b, C5c,
# C6, C7, C8 as analysis/claims.py defines them).
DEFENSE_CLAIMS = r"C[5-8]"


def _embedded(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def defenses_buy_back(exp: Experiment) -> str:
    """Every defense and setting of a cell compared on the best attack, by balanced accuracy and by TPR at
    1% FPR, with the Pareto front across defenses (figure and table), then the claims C5-C8. Without
    defended rows: what is missing and the command that runs them, then the claims (not run)."""
    parts = []
    try:
        points = defense_front_points(exp.rows)
    except Skipped as reason:
        parts.append(f'<p class="skip">Nothing to compare: {html.escape(str(reason))}</p>')
    else:
        parts.append(
            "<p>Per cell and view (non-adaptive attacks; adaptive: the shadows fine-tuned with the defense), every "
            "defense and setting as the mean over seeds of the target's test accuracy and of the best attack on it "
            "(per unit the strongest of the attacks every point of the cell faced), judged twice: by balanced "
            "accuracy at the attack's own shadow-calibrated threshold, and by TPR at 1% FPR. A defense can break "
            "the attacker's calibration (balanced accuracy near 0.5) while the TPR at low FPR still shows the "
            "membership signal. Basic (undefended, the star) is one point serving both views. <code>on_front</code>: "
            "on the Pareto front across defenses (max test accuracy, min best balanced accuracy; "
            "<code>miaray.results.defense_front</code>); <code>on_front_tpr</code>: the same by TPR at 1% FPR. "
            f"{INTERVALS}</p>")
        with tempfile.TemporaryDirectory() as tmp:
            for setting, rows in settings_groups(exp.rows):  # units that differ in a setting: one figure each
                folder = Path(tmp) / (settings_suffix(setting) or "all")
                folder.mkdir()
                try:
                    drawn = fig_defense_front(dataclasses.replace(exp, rows=rows), folder)
                except Skipped as reason:
                    parts.append(f'<p class="skip">{html.escape(settings_label(setting))}: '
                                 f'{html.escape(str(reason))}</p>')
                    continue
                if setting:
                    parts.append(f"<h4>{html.escape(settings_label(setting))}</h4>")
                parts.extend(_embedded(path) for path in drawn)
        parts.append(_table(with_intervals(defense_front_table(points))))
    table = claims_table(exp)
    table = table[table["claim"].astype(str).str.match(DEFENSE_CLAIMS)]
    parts.append("<h3>Claims about defenses (C5-C8)</h3>")
    if table.empty:
        parts.append('<p class="skip">No claim C5-C8 in <code>analysis/claims.py</code>.</p>')
    else:
        parts.append(f"<p>{html.escape(verdict_counts(table))}; see the claims section above for how a verdict is "
                     "reached.</p>")
        parts.extend(_claim_rows(table))
    return "\n".join(parts)


def exposure_section(exp: Experiment) -> str:
    """analysis/exposure.py's summary per cell, its histograms and image grids; Skipped without per-sample
    scores on both targets."""
    with tempfile.TemporaryDirectory() as tmp:
        table, figures, notes = write_exposure(exp, Path(tmp))
        parts = [f"<p>Per target sample, the change of its membership score from the original to the pruned target "
                 f"(the attack named: online LiRA's log likelihood ratio, offline LiRA's z, else the attack's own score). A member is exposed when its change "
                 f"exceeds the {NULL_QUANTILE:.0%} quantile of the non-members' changes, what pruning does to a score "
                 f"with no membership behind it: with no effect, {1 - NULL_QUANTILE:.0%} of members are; "
                 f"<code>excess</code> is the share above that. Among members, <code>prediction_changed</code> is the "
                 f"share whose predicted class differs between the two targets, beside the share exposed among those "
                 f"and among the rest. {INTERVALS}</p>",
                 _table(with_intervals(table))]
        parts += [f'<p class="skip">{html.escape(note)}</p>' for note in notes]
        parts += [_embedded(path) for path in figures]
    return "\n".join(parts)


# Figures with a section of their own ("What defenses buy back"): not repeated among all figures.
SHOWN_ELSEWHERE = (DEFENSE_FRONT_FIGURE, DEFENSE_FRONT_TABLE)


def _shown_elsewhere(outcome_name: str) -> bool:
    """Whether an outcome is one of SHOWN_ELSEWHERE (also when drawn per setting: 'NAME [max_epochs 3]')."""
    return outcome_name.split(" [")[0] in SHOWN_ELSEWHERE


def figures_section(exp: Experiment) -> str:
    """Every figure and table figures.py can make, embedded; then what was skipped and why."""
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = write_figures(exp, Path(tmp))
        parts = []
        for outcome in outcomes:
            if _shown_elsewhere(outcome.name):
                continue
            for path in outcome.files:
                if path.suffix == ".png":
                    parts.append(f'<h3>{html.escape(outcome.name)}</h3>\n{_embedded(path)}')
                elif path.suffix == ".csv":
                    parts.append(f"<h3>{html.escape(outcome.name)}</h3>\n{_table(with_intervals(pd.read_csv(path)))}")
    notes = [f'<li class="{"error" if o.error else "skip"}">{html.escape(o.name)}: '
             f'{html.escape(o.error or o.skipped or "")}</li>' for o in outcomes
             if not o.files and (o.error or not _shown_elsewhere(o.name))]
    if notes:
        parts.append("<h3>Not drawn</h3><ul>" + "".join(notes) + "</ul>")
    print(summary(outcomes))
    return "\n".join(parts)


def render(exp: Experiment) -> str:
    """The whole page as a string."""
    rows = exp.rows
    sections = [_section("The paper's claims: verdicts", lambda: claims(exp)),
                _section("Original vs pruned: attack success per cell", lambda: headline(exp)),
                _section("Defenses: Pareto fronts (non-adaptive attacks)", lambda: fronts(exp, adaptive=False)),
                _section("Defenses: Pareto fronts (adaptive attacks)", lambda: fronts(exp, adaptive=True)),
                _section("What defenses buy back", lambda: defenses_buy_back(exp)),
                _section("Which samples pruning exposes", lambda: exposure_section(exp)),
                _section("Figures and tables", lambda: figures_section(exp))]
    failed = int((rows["status"] == "failed").sum()) if len(rows) else 0
    units = rows["unit_id"].nunique() if len(rows) else 0
    intro = (f"<p>{len(rows)} rows from {units} units ({failed} failed rows) in: "
             + ", ".join(f"<code>{html.escape(s)}</code>" for s in exp.sources) + "</p>")
    # After the sections: drawing the figures reads the signal and ROC files, which may add notes.
    intro += "".join(f'<p class="skip">{html.escape(note)}</p>' for note in exp.notes)
    if failed:
        errors = rows.loc[rows["status"] == "failed", ["unit_id", "error"]].drop_duplicates("unit_id")
        intro += "<details><summary>failed units</summary>" + _table(errors) + "</details>"
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>miaray report</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>miaray report</h1>\n" + "\n".join([intro, *sections])
            + "\n</body></html>\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="report.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("results", nargs="+", help="experiment directories (<storage>/<name>, holding rows/)")
    p.add_argument("--out", required=True, type=Path, help="the HTML file to write (self-contained: figures embedded)")
    return add_debug_option(p)


@entry_point(prog="report.py")
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    exp = load_for_command(parser, args.results, checks=[lambda: check_output_file(args.out, option="--out")])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    page = render(exp)
    for note in exp.notes:  # also on the page; said here too, so that nobody must open it to learn of them
        print(f"note: {note}")
    args.out.write_text(page, encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
