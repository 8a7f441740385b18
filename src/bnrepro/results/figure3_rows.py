"""The rows of Figure 3's table (figure3.py renders them; figure2.py draws the same runs and target).

Per variant of bnrepro/variants.py, over its runs (seeds): steps to the target (the finished Inception
runs' mean max by default, `reference_max`, as the paper's 72.2% is Inception's maximum), maximum,
final and Alg. 2 accuracy, divergences, plateau; then each row against Inception's (`compare`): the
speed-up and the max minus the same reference. Each row also holds itself at a second level,
Inception's plateau mean (`reference_plateau`), which one noisy evaluation cannot move as much as a max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bnrepro.results.plateau import end_of_run, plateau
from bnrepro.results.runs import (
    METRIC,
    Run,
    accuracy_curve,
    best,
    diverged_at,
    final_accuracy,
    mean_std,
    population_accuracy,
    steps_to,
)
from bnrepro.variants import FIGURE3, REFERENCE


def finished_reference(runs: dict[str, list[Run]]) -> list[Run]:
    """The finished Inception runs: a diverged run's accuracy is not the level Inception trains to."""
    return [r for r in runs.get(REFERENCE, []) if r.finished]


def reference_max(runs: dict[str, list[Run]]) -> float | None:
    """The one reference accuracy of the table: the mean of the finished Inception runs' maxima (a
    diverged run's max is not the level Inception trains to); the default target, and what `max vs
    Inception's` subtracts. None without a finished Inception run."""
    finished = finished_reference(runs)
    return float(np.mean([best(r)[0] for r in finished])) if finished else None


def reference_plateau(runs: dict[str, list[Run]]) -> float | None:
    """The level Inception settles at: the mean over the finished Inception runs of each one's mean accuracy
    over the last fifth of its evaluations (plateau.py's `end_of_run`, the rule's own window). A max is the
    highest of many noisy evaluations; this mean moves far less with one of them. None without a finished
    Inception run."""
    finished = finished_reference(runs)
    return float(np.mean([end_of_run(accuracy_curve(r)[1]).mean for r in finished])) if finished else None


def resolve_target(target, runs: dict[str, list[Run]]) -> tuple[float | None, str]:
    """The accuracy to reach and where it comes from: a number, or reference_max."""
    if target not in (None, REFERENCE):
        return float(target), "given (target=...)"
    label = FIGURE3[REFERENCE].label
    finished = finished_reference(runs)
    if not finished:
        return None, f"unknown: no finished {label} run; pass target=<accuracy>"
    left_out = len(runs[REFERENCE]) - len(finished)
    left_out = f"; {left_out} {label} run(s) that did not finish left out" if left_out else ""
    if len(finished) == 1:
        return reference_max(runs), f"the {label} run's max (as the paper's 72.2%){left_out}"
    return reference_max(runs), (
        f"the mean of the {len(finished)} {label} runs' maxima (as the paper's 72.2%, Inception's max); "
        f"a seed whose max is below the mean never reaches it{left_out}"
    )


@dataclass
class Row:
    model: str
    runs: int
    target: float | None = None  # the accuracy the steps are counted to
    reached: int = 0
    steps_mean: float = math.nan
    steps_std: float = math.nan
    max_mean: float = math.nan
    max_std: float = math.nan
    max_step: float = math.nan
    diverged: int = 0
    diverged_at: float = math.nan  # paper-equivalent step of the first divergence whose step is known
    diverged_unknown: int = 0  # diverged runs whose summary lacks the step (left out of diverged_at)
    never: int = 0  # runs that ended (finished) below the target
    diverged_early: int = 0  # runs that diverged before reaching the target
    statuses: str = ""
    # The last evaluation (BN with its moving averages) and Alg. 2's (population statistics), finished runs.
    final_mean: float = math.nan
    final_std: float = math.nan
    population_mean: float = math.nan
    population_std: float = math.nan
    finished: int = 0
    with_population: int = 0  # finished runs with an Alg. 2 accuracy (BN nets)
    steps: list[float] = field(default_factory=list)  # each run's steps to the target, those that reach it
    maxima: list[float] = field(default_factory=list)  # each run's max, those with an evaluation
    not_reached: list[str] = field(default_factory=list)  # "seed 2 never", "seed 1 diverged"
    # Against the reference row (compare()): per run, the reference's mean steps to the target / the run's
    # (speed-up), and the run's max minus reference_max; mean, sample std and n over the runs.
    speedup_mean: float = math.nan
    speedup_std: float = math.nan
    speedup_n: int = 0
    max_diff_mean: float = math.nan
    max_diff_std: float = math.nan
    max_diff_n: int = 0
    plateaus: list[tuple[bool, float]] = field(default_factory=list)  # per run: plateau.plateau of its curve
    at_plateau: Row | None = None  # the same runs counted to reference_plateau (table_rows sets it)


def row(model: str, runs: list[Run], target: float | None) -> Row:
    out = Row(model, len(runs), target)
    if not runs:
        return out
    out.statuses = ", ".join(sorted({r.summary.get("status", "unknown") for r in runs}))
    diverged = [r for r in runs if r.summary.get("status") == "diverged"]
    out.diverged = len(diverged)
    known = [at for at in map(diverged_at, diverged) if at is not None]
    out.diverged_unknown = len(diverged) - len(known)
    if known:
        out.diverged_at = min(known)
    maxima = [best(r) for r in runs if len(r.curve(METRIC)[0])]
    if maxima:
        out.maxima = [m for m, _ in maxima]
        out.max_mean, out.max_std = mean_std(out.maxima)
        out.max_step = float(np.mean([s for _, s in maxima]))
    finished = [r for r in runs if r.finished]
    out.finished = len(finished)
    out.plateaus = [plateau(acc) for r in finished if len(acc := accuracy_curve(r)[1])]
    finals = [f for f in map(final_accuracy, finished) if not math.isnan(f)]
    if finals:
        out.final_mean, out.final_std = mean_std(finals)
    populations = [p for p in map(population_accuracy, finished) if not math.isnan(p)]
    out.with_population = len(populations)
    if populations:
        out.population_mean, out.population_std = mean_std(populations)
    if target is not None:
        hits = [(r, steps_to(r, target)) for r in runs]
        reached = [s for _, s in hits if s is not None]
        out.steps, out.reached = reached, len(reached)
        out.not_reached = [f"{run_label(r)} {short_of(r)}" for r, s in hits if s is None]
        out.diverged_early = sum(s is None and r.summary.get("status") == "diverged" for r, s in hits)
        out.never = len(runs) - out.reached - out.diverged_early
        if reached:
            out.steps_mean, out.steps_std = mean_std(reached)
    return out


def run_label(run: Run) -> str:
    """How a cell names one run of a row: its seed (else its folder)."""
    seed = run.summary.get("seed")
    return f"seed {seed}" if seed is not None else run.path.name


def short_of(run: Run) -> str:
    """Why a run did not reach the target: it ended below it (never), it diverged, or it is unfinished."""
    status = run.summary.get("status", "unknown")
    return {"finished": "never", "diverged": "diverged"}.get(status, status)


def compare(rows: list[Row], ref_max: float | None) -> None:
    """Each row against the reference row (Inception): per run that reaches the target, the reference's
    mean steps to it / the run's (the speed-up); per run with an evaluation, its max minus `ref_max`
    (reference_max). The reference row is compared with itself, which shows the spread of its own seeds."""
    ref = next((r for r in rows if r.model == REFERENCE), None)
    if ref is None:
        return
    for r in rows:
        if r.steps and ref.steps:
            ratios = [ref.steps_mean / s if s > 0 else math.inf for s in r.steps]
            r.speedup_n, (r.speedup_mean, r.speedup_std) = len(ratios), mean_std(ratios)
        if r.maxima and ref_max is not None:
            diffs = [m - ref_max for m in r.maxima]
            r.max_diff_n, (r.max_diff_mean, r.max_diff_std) = len(diffs), mean_std(diffs)


def table_rows(runs: dict[str, list[Run]], target) -> tuple[list[Row], float | None, str]:
    """The table's rows, counted to the target (and to Inception's plateau mean: each row's `at_plateau`)."""
    value, origin = resolve_target(target, runs)
    rows = [row(m, runs.get(m, []), value) for m in FIGURE3]
    level, ref_max = reference_plateau(runs), reference_max(runs)
    at_level = [row(m, runs.get(m, []), level) for m in FIGURE3]
    for rs in (rows, at_level):
        compare(rs, ref_max)
    for r, at in zip(rows, at_level, strict=True):
        r.at_plateau = at
    return rows, value, origin


def by_model(runs: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.summary.get("model"), []).append(r)
    return out
