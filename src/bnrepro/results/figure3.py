"""Figure 3 of the paper from the variants' runs (bnrepro/variants.py): results/figure3.{md,csv}.

Per variant (bnrepro/variants.py: which, in what order, their labels and the paper's numbers):
paper-equivalent steps (examples seen / 32) until single-crop top-1 first reaches the
target -- the Inception run's maximum by default, as the paper's 72.2% is Inception's maximum on
ImageNet -- the maximum accuracy and the step where it was reached, the paper's numbers beside them.
What a proxy can compare with the paper are the ratios and differences against Inception: the speed-up
(Inception's steps to the target / the variant's) and the max accuracy minus Inception's, each beside the
paper's own (from the paper_* numbers of bnrepro/variants.py). "never", "diverged" and "missing" are
written where they are the truth. With several seeds per variant: mean, standard deviation and n over
seeds, and which seeds never reached the target. The steps and speed-up are also counted to Inception's
plateau mean (figure3_rows.reference_plateau), a level one noisy evaluation moves less than a maximum.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from bnrepro.results import lr_stability  # its precondition rule, cited in the note
from bnrepro.results.cells import fmt_steps, pct, pm, points
from bnrepro.results.figure3_rows import Row, by_model, table_rows
from bnrepro.results.page import Page, table
from bnrepro.results.plateau import change_points
from bnrepro.results.runs import Run
from bnrepro.variants import FIGURE3, REFERENCE, Variant

__all__ = ["by_model", "render", "table_rows"]  # the rows' two entry points, re-exported for callers


def steps_cell(r: Row, target: float | None) -> str:
    if r.runs == 0:
        return "missing"
    if target is None:
        return "n/a (no target)"
    if r.reached == 0:
        return f"diverged {diverged_when(r)}" if r.diverged == r.runs else "never"
    cell = pm(r.steps_mean, r.steps_std, lambda x: fmt_steps(x, like=r.steps_mean))
    if r.reached == r.runs:  # how many runs the mean is over
        return cell if r.runs == 1 else f"{cell} (mean of {r.runs} runs)"
    others = [
        f"{r.never} never" if r.never else "",
        f"{r.diverged_early} diverged" if r.diverged_early else "",
    ]
    return f"{cell} (mean of the {r.reached} of {r.runs} runs that reach it; {', '.join(o for o in others if o)})"


def max_cell(r: Row) -> str:
    if r.runs == 0:
        return "missing"
    cell = f"{pm(r.max_mean, r.max_std, pct)} at {fmt_steps(r.max_step)}"
    if r.diverged:
        cell += f"; diverged ({r.diverged}/{r.runs}) {diverged_when(r)}"
    return cell


def diverged_when(r: Row) -> str:
    """`at 1,040` (the first divergence whose step is known), `(step unknown)` where no run recorded it,
    and how many did not where only some did."""
    if math.isnan(r.diverged_at):
        return "(step unknown)"
    unknown = f" ({r.diverged_unknown} with the step unknown)" if r.diverged_unknown else ""
    return f"at {fmt_steps(r.diverged_at)}{unknown}"


def _accuracy_cell(r: Row, mean, std, recorded: int, unrecorded: str, of_runs: str) -> str:
    """mean ± std of an accuracy over the `recorded` runs of the row that have it; `unrecorded`: the cell
    when none has it; `of_runs`: how a partial count is said, e.g. "{n} of {runs} runs finished"."""
    if r.runs == 0:
        return "missing"
    if r.finished == 0:
        return "n/a (no finished run)"
    if recorded == 0:
        return unrecorded
    cell = pm(mean, std, pct)
    return cell if recorded == r.runs else f"{cell} ({of_runs.format(n=recorded, runs=r.runs)})"


def reach_note(r: Row) -> str:
    """Which runs of the row did not reach the target (`2 of 3 reached; seed 2 never`); empty if all did."""
    return "" if r.reached == r.runs else f"{r.reached} of {r.runs} reached; {', '.join(r.not_reached)}"


def _n(n: int, note: str = "", reference: bool = False) -> str:
    """A comparison cell's tail: `(n=2: 2 of 3 reached; seed 2 never)`, `(reference; n=3)`."""
    return f"({'reference; ' if reference else ''}n={n}{f': {note}' if note else ''})"


def speedup_cell(r: Row, ref: Row | None, target: float | None) -> str:
    """Speed-up vs the reference: mean ± std over the runs that reach the target, n, and who did not."""
    label = FIGURE3[REFERENCE].label
    if r.runs == 0:
        return "missing"
    if target is None:
        return "n/a (no target)"
    if ref is None or ref.runs == 0:
        return f"n/a (no {label} run)"
    if not ref.steps:
        return f"n/a ({label} never reaches the target)"
    if not r.steps:
        return "never" if r.runs == 1 and r.never == 1 else f"never ({reach_note(r)})"
    value = f"{r.speedup_mean:.1f}x" + ("" if math.isnan(r.speedup_std) else f" ± {r.speedup_std:.1f}x")
    return f"{value} {_n(r.speedup_n, reach_note(r), r.model == REFERENCE)}"


def max_diff_cell(r: Row, ref: Row | None) -> str:
    """Max accuracy minus reference_max, in percentage points: mean ± std over runs, n."""
    if r.runs == 0:
        return "missing"
    if ref is None or not ref.maxima:
        return f"n/a (no {FIGURE3[REFERENCE].label} run)"
    if not r.maxima:
        return "n/a (no evaluation)"
    if not r.max_diff_n:
        return f"n/a (no finished {FIGURE3[REFERENCE].label} run)"
    note = "" if r.max_diff_n == r.runs else f"{r.max_diff_n} of {r.runs} runs have an evaluation"
    value = points(r.max_diff_mean) + ("" if math.isnan(r.max_diff_std) else f" ± {100 * r.max_diff_std:.1f}")
    return f"{value} {_n(r.max_diff_n, note, r.model == REFERENCE)}"


def paper_speedup(model: str) -> float | str:
    """The paper's speed-up vs Inception from variants.py: its steps to 72.2% / the variant's; `never`, or
    `n/a` for a variant not in the paper."""
    v, ref = FIGURE3[model], FIGURE3[REFERENCE]
    if not v.in_paper:
        return "n/a"
    return ref.paper_steps / v.paper_steps if v.paper_steps else "never"


def paper_max_diff(model: str) -> float | str:
    """The paper's max minus Inception's, in percentage points; the bound its text gives; or `n/a`."""
    v, ref = FIGURE3[model], FIGURE3[REFERENCE]
    if v.paper_max is not None:
        return round(100 * (v.paper_max - ref.paper_max), 1) + 0.0
    return f"never better than {pct(v.paper_at_most)}" if v.paper_at_most is not None else "n/a"


def paper_speedup_cell(model: str) -> str:
    x = paper_speedup(model)
    cell = x if isinstance(x, str) else f"{x:.1f}x"
    return f"{cell} (reference)" if model == REFERENCE else cell


def paper_max_diff_cell(model: str) -> str:
    x = paper_max_diff(model)
    cell = x if isinstance(x, str) else f"{x:+.1f}"
    return f"{cell} (reference)" if model == REFERENCE else cell


def plateau_table_cell(r: Row) -> str:
    """How many finished runs reached the plateau (plateau.py) and each run's change over its last fifth."""
    if not r.plateaus:
        return "missing" if not r.runs else "n/a"
    changes = "/".join(f"{change_points(c):+.1f}" for _, c in r.plateaus)
    return f"{sum(ok for ok, _ in r.plateaus)} of {len(r.plateaus)} ({changes} pt)"


def final_cell(r: Row) -> str:
    return _accuracy_cell(r, r.final_mean, r.final_std, r.finished, "n/a (no finished run)",
                          "{n} of {runs} runs finished")  # fmt: skip


def population_cell(r: Row) -> str:
    return _accuracy_cell(r, r.population_mean, r.population_std, r.with_population, "n/a (not recorded)",
                          "{n} of {runs} runs")  # fmt: skip


def markdown_table(rows: list[Row], target: float | None) -> list[str]:
    """The table itself: identical for the same runs whatever the source (tests compare it)."""
    reference = next((r for r in rows if r.model == REFERENCE), None)
    label, paper_target = FIGURE3[REFERENCE].label, pct(FIGURE3[REFERENCE].paper_max)
    level = plateau_level(rows)
    columns = {"model": "model", "steps": f"steps to {pct(target) if target is not None else 'target'}",
               "speedup": f"speed-up vs {label}", "paper_speedup": "paper: speed-up",
               "steps_plateau": f"steps to {pct(level) if level is not None else 'it'} ({label}'s plateau mean)",
               "speedup_plateau": "speed-up to it",
               "max": "max accuracy (at step)", "max_diff": f"max vs {label}'s (points)",
               "paper_max_diff": f"paper: max vs {label}'s", "plateau": "plateau reached",
               "final": "final accuracy", "population": "Alg. 2 accuracy", "runs": "runs",
               "paper_steps": f"paper: steps to {paper_target}", "paper_max": "paper: max"}  # fmt: skip
    return table(columns, [table_row(r, reference, target) for r in rows])


def plateau_level(rows: list[Row]) -> float | None:
    """Inception's plateau mean (figure3_rows.reference_plateau), as table_rows counted the rows to it."""
    return next((r.at_plateau.target for r in rows if r.model == REFERENCE and r.at_plateau), None)


def table_row(r: Row, reference: Row | None, target: float | None) -> dict[str, str]:
    """One row of the table: its cells by column (markdown_table's keys)."""
    v = FIGURE3[r.model]
    at, ref_at = r.at_plateau, reference.at_plateau if reference else None  # both set by table_rows
    return {"model": v.label, "steps": steps_cell(r, target), "speedup": speedup_cell(r, reference, target),
            "paper_speedup": paper_speedup_cell(r.model),
            "steps_plateau": steps_cell(at, at.target), "speedup_plateau": speedup_cell(at, ref_at, at.target),
            "max": max_cell(r),
            "max_diff": max_diff_cell(r, reference), "paper_max_diff": paper_max_diff_cell(r.model),
            "plateau": plateau_table_cell(r), "final": final_cell(r), "population": population_cell(r),
            "runs": str(r.runs), "paper_steps": paper_steps_cell(v),
            "paper_max": paper_max_cell(v) + (f" ({v.note})" if v.note else "")}  # fmt: skip


def paper_steps_cell(v: Variant) -> str:
    """The paper's steps to 72.2%: `never` for a variant of the paper that did not get there, `n/a` for one
    that is not in the paper."""
    if not v.in_paper:
        return "n/a"
    return fmt_steps(v.paper_steps) if v.paper_steps else "never"


def paper_max_cell(v: Variant) -> str:
    """The paper's max accuracy, or the bound its text gives (Inception-Sigmoid), or `n/a`."""
    if v.paper_max is not None:
        return pct(v.paper_max)
    return f"never better than {pct(v.paper_at_most)}" if v.paper_at_most is not None else "n/a"


def paper_max_csv(v: Variant):
    """The CSV's paper_max_acc: the accuracy, `at most <bound>` where the paper gives only a bound, or n/a."""
    if v.paper_max is not None:
        return v.paper_max
    return f"at most {v.paper_at_most}" if v.paper_at_most is not None else "n/a"


def scale_notes(runs: list[Run], spec: dict) -> list[str]:
    """The spec's note for each reduced scale the runs were made at (reproduce/figure3.yaml `scales`, by the
    runs' task), e.g. the 2-core scale of the Fashion-MNIST proxy and the command for the full one."""
    scales = spec.get("scales") or {}
    return [scales[t] for t in sorted({r.summary.get("task") for r in runs} & set(scales))]


def precondition_note(stability_runs: list[Run]) -> str:
    """The paper's precondition for the variants' LRs, from the LR-stability runs reproduce.py hands over
    (reproduce/figure3.yaml `companions`): Inception at 5x the tuned LR trains clearly worse or diverges."""
    verdict, why = lr_stability.precondition(lr_stability.grouped(stability_runs))
    if verdict == "not run":
        why = f"{why} (the LR-stability sweep, `just reproduce lr_stability`, has not been run at this scale)"
    return (f"Precondition (Sec. 4.2.1: Inception at 5x the LR diverged, so BN-x5's LR is one Inception cannot "
            f"use; results/lr_stability.md): {why} -> **{verdict}**.")  # fmt: skip


def csv_row(r: Row, target: float | None) -> dict:
    """One row of figure3.csv: the numbers behind the table's cells (CSV_COLUMNS)."""
    v = FIGURE3[r.model]
    values = [r.model, r.runs, target, r.reached, r.steps_mean, r.steps_std, r.max_mean, r.max_std, r.max_step,
              r.diverged, r.diverged_at, r.statuses or "missing", v.paper_steps or ("never" if v.in_paper else "n/a"),
              paper_max_csv(v), r.final_mean, r.final_std, r.population_mean, r.population_std, r.speedup_mean,
              r.speedup_std, r.speedup_n, 100 * r.max_diff_mean, 100 * r.max_diff_std, r.max_diff_n,
              "; ".join(r.not_reached), paper_speedup(r.model), paper_max_diff(r.model)]  # fmt: skip
    at = r.at_plateau  # set by table_rows
    values += [at.target, at.reached, at.steps_mean, at.steps_std, at.speedup_mean, at.speedup_std,
               at.speedup_n]  # fmt: skip
    return dict(zip(CSV_COLUMNS, values, strict=True))


CSV_COLUMNS = ["model", "runs", "target", "reached", "steps_to_target_mean", "steps_to_target_std", "max_acc_mean",
               "max_acc_std", "max_acc_step_mean", "diverged", "diverged_at_step", "status", "paper_steps_to_72.2",
               "paper_max_acc", "final_acc_mean", "final_acc_std", "population_acc_mean", "population_acc_std",
               "speedup_mean", "speedup_std", "speedup_n", f"max_vs_{REFERENCE}_points_mean",
               f"max_vs_{REFERENCE}_points_std", f"max_vs_{REFERENCE}_n", "not_reached", "paper_speedup",
               f"paper_max_vs_{REFERENCE}_points", f"{REFERENCE}_plateau_mean", "plateau_mean_reached",
               "steps_to_plateau_mean_mean", "steps_to_plateau_mean_std", "speedup_to_plateau_mean_mean",
               "speedup_to_plateau_mean_std", "speedup_to_plateau_mean_n"]  # fmt: skip


def render(runs: list[Run], out_dir: str | Path, command: str, spec: dict | None = None) -> list[Path]:
    page = Page.of(runs, out_dir, command, spec)
    rows, target, origin = table_rows(by_model(runs), page.spec.get("target", REFERENCE))
    ref, label = FIGURE3[REFERENCE], FIGURE3[REFERENCE].label
    md = page.markdown("figure3.md", "Figure 3 (Sec. 4.2.2): steps to match Inception, and maximum accuracy", [
        *[line for s in scale_notes(runs, page.spec) for line in (f"**{s}**", "")],
        precondition_note(page.spec.get("companion_runs", [])),
        "",
        f"Target: {pct(target) if target is not None else 'n/a'} single-crop top-1 = {origin}. Steps are "
        "paper-equivalent (examples seen / 32, the paper's mini-batch), counted at the evaluations "
        "(first evaluation at or above the target, to within 1e-6). `never`: never reached; `missing`: no run.",
        "",
        "`max accuracy` is the highest of the evaluations during training, which is biased upward by their "
        "noise; `final accuracy` is the last evaluation (BN nets with their moving averages) and `Alg. 2 "
        "accuracy` the same network with population statistics (paper Alg. 2, after the last step), both over "
        "the finished runs (`n/a (not recorded)`: a net without BN, as Inception, or one trained with "
        "`callbacks.population_stats.enabled=false`). `±`: mean ± sample standard deviation (ddof=1) over the runs of the row, in the "
        "mean's unit (percentage points for accuracies and their differences, x for speed-ups); a cell without it is one run.",
        "",
        f"What a proxy can compare with the paper are ratios and differences against {label}, each beside the "
        f"paper's own: `speed-up vs {label}` is, for each run that reaches the target, the {label} row's mean "
        f"steps to it divided by the run's steps (the paper's: {label}'s {fmt_steps(ref.paper_steps)} steps / the variant's); "
        f"`max vs {label}'s` is each run's max minus the mean of the finished {label} runs' maxima (the "
        f"reference the default target is too; a diverged {label} run is left out of both), in percentage points (the "
        f"paper's: its max minus {pct(ref.paper_max)}). Each gives mean ± standard deviation over the runs and `n=`, how many "
        "runs it is over; where some runs did not reach the target it says how many did and which did not "
        "(`2 of 3 reached; seed 2 never`), and its mean is over those that did. The "
        f"{label} row is compared with itself: its spread is its own seeds'. Absolute steps and accuracies "
        "are the proxy's own and are not comparable with ImageNet's.",
        "",
        f"`steps to ... ({label}'s plateau mean)` counts the same steps to a second level: the mean over the "
        f"finished {label} runs of each one's mean accuracy over the last fifth of its evaluations (the window "
        "of the plateau rule below), which one noisy evaluation moves far less than a maximum; `speed-up to "
        f"it` is `speed-up vs {label}` at that level.",
        "",
        "`plateau reached`: how many of the finished runs reached their plateau by the criterion of "
        "src/bnrepro/results/plateau.py (mean accuracy over the last fifth of the evaluations minus the mean "
        "over the fifth before it below 1 point), and each run's change; a maximum of runs still rising is "
        "not the maximum they would reach.",
        "",
        *markdown_table(rows, target),
    ])  # fmt: skip
    out_csv = page.out_dir / "figure3.csv"
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_COLUMNS)
        w.writeheader()
        w.writerows(csv_row(r, target) for r in rows)
    return [md, out_csv]
