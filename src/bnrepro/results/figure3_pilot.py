"""The Figure 3 proxy's length: results/figure3_pilot.{md,json,png} from the pilot's Inception runs
(experiment=fashion_figure3_pilot[_cpu]: one run per base LR, as long as the budget affords).

The rule (`choose`), stated in the file it writes: the candidate lengths L are the multiples of the runs'
evaluation period from FIRST_CANDIDATE up to the pilot's length; at each, every pilot run is judged by the
plateau rule (plateau.py) on its evaluations at steps <= L. Since the LR schedule and the evaluation steps
do not depend on the length, those are exactly the evaluations a run of length L gets. The chosen length
is the shortest L at which every run meets the rule; none meets it -> `length_steps: null` and a bold line
(the budget cannot hold the plateau: cut the cost of a step, not the schedule).

The JSON is what `just proxy` reads: `length_steps` (L or null), `candidates` ({L: {base LR: [reached,
change in points as printed]}}) and `s_per_step` ({base LR: s}). The page also gives each run's measured s/step and
the sequence's budget recomputed with it (the spec's `budget`: runs per phase, jobs at once).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bnrepro.results.cells import fmt_steps  # noqa: E402
from bnrepro.results.page import Page, figure_provenance, table  # noqa: E402
from bnrepro.results.plateau import change_points, plateau, plateau_cell  # noqa: E402
from bnrepro.results.runs import METRIC, Run, base_lr  # noqa: E402

# With the 8 early evaluations (every 50 steps to step 500), the last two fifths of a run's evaluations are
# regular ones from 1,500 steps on (docs/results.md "The Figure 3 proxy"): shorter, the rule would compare
# a fifth of dense early evaluations with regular ones.
FIRST_CANDIDATE = 1500


def by_lr(runs: list[Run]) -> dict[float, Run]:
    """One run per base LR (the newest: runs come oldest first), smallest LR first."""
    newest = {base_lr(r): r for r in runs}
    return dict(sorted(newest.items()))


def period(runs: list[Run]) -> int:
    """The runs' regular evaluation period in steps (summary.json's eval_every_steps); they must agree."""
    periods = {int(r.summary["eval_every_steps"]) for r in runs if r.summary.get("eval_every_steps")}
    if len(periods) != 1:
        raise ValueError(f"the pilot's runs need one evaluation period (summary.json eval_every_steps), got "
                         f"{sorted(periods) or 'none'}: render runs of one pilot experiment")  # fmt: skip
    return periods.pop()


def candidates(runs: list[Run]) -> list[int]:
    """The multiples of the evaluation period from FIRST_CANDIDATE up to the pilot's length (the longest
    max_steps of its runs: a run that stopped early is judged, and fails, at the lengths it did not reach)."""
    every = period(runs)
    longest = max(int(r.summary.get("max_steps") or 0) for r in runs)
    return list(range(math.ceil(FIRST_CANDIDATE / every) * every, longest + 1, every))


def prefix(run: Run, length: int) -> np.ndarray | None:
    """The run's accuracies at steps <= length, in order; None when it did not train that far (diverged,
    failed, or a shorter run): it says nothing about a run of that length."""
    steps, acc = run.curve(METRIC)
    if run.summary.get("status") != "finished" or int(run.summary.get("steps") or 0) < length:
        return None
    return acc[steps <= length]


def judged(run: Run, length: int) -> tuple[bool, float]:
    """(reached, change) of the plateau rule at `length`; (False, NaN) where the run did not get there."""
    acc = prefix(run, length)
    return (False, math.nan) if acc is None else plateau(acc)


def choose(runs: dict[float, Run], lengths: list[int]) -> int | None:
    """The shortest length at which every run meets the plateau rule; None if there is none."""
    return next((L for L in lengths if runs and all(judged(r, L)[0] for r in runs.values())), None)


def s_per_step(run: Run) -> float:
    """The run's wall time over its steps, its evaluations included (summary.json's wall_time_s, from the
    start of fit: the process's own start-up, about 15 s, is not in it); NaN where not recorded."""
    wall, steps = run.summary.get("wall_time_s"), run.summary.get("steps")
    return float(wall) / int(steps) if wall and steps else math.nan


def cell(run: Run, length: int) -> str:
    acc = prefix(run, length)
    if acc is None:
        return f"n/a (the run stopped at {fmt_steps(run.summary.get('steps') or 0)}: {run.summary.get('status')})"
    return plateau_cell(acc)


def _lr(x: float) -> str:
    return f"{x:g}"


def budget_lines(spec: dict, runs: list[Run], length: int, seconds: float) -> list[str]:
    """The sequence's budget at `length` with the pilot's measured s/step: per phase of the spec's `budget`
    (by the runs' task: runs per phase and jobs at once), minutes a run and wall minutes (runs x min / jobs)."""
    tasks = sorted({r.summary.get("task") for r in runs} & set(spec.get("budget") or {}))
    if not tasks or math.isnan(seconds):
        return [
            "No budget: " + ("no s/step recorded." if tasks else "the spec has no `budget` for this task.")
        ]
    plan = spec["budget"][tasks[0]]
    per_run = length * seconds / 60
    rows = [{"phase": phase, "runs": n, "min": f"{per_run:.1f}", "wall": f"{n * per_run / plan['jobs']:.0f}"}
            for phase, n in plan["phases"].items()]  # fmt: skip
    total = sum(plan["phases"].values())
    rows.append(
        {
            "phase": "**total**",
            "runs": f"**{total}**",
            "min": "",
            "wall": f"**{total * per_run / plan['jobs']:.0f}**",
        }
    )
    return [
        f"The budget of `just proxy` ({tasks[0]}: {plan['jobs']} runs at a time) at {fmt_steps(length)} steps, "
        f"every run at the pilot's mean {seconds:.3f} s/step (Inception, evaluations included; the BN-x5 "
        "family's step is about 15% cheaper, BN-Baseline's about 5% dearer, docs/results.md):",
        "",
        *table({"phase": "phase", "runs": "runs", "min": "min/run", "wall": "wall min"}, rows),
    ]  # fmt: skip


def plot(runs: dict[float, Run], lengths: list[int], chosen: int | None, prov: dict, png: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for lr, r in runs.items():
        ax.plot(*r.curve(METRIC), marker=".", lw=1.2, label=f"Inception, base LR {_lr(lr)}")
    for L in lengths:
        ax.axvline(L, color="k" if L == chosen else "0.7", lw=1.4 if L == chosen else 0.6,
                   ls="-" if L == chosen else ":")  # fmt: skip
    ax.set(xlabel="steps (batch 32)", ylabel="single-crop top-1 accuracy")
    ax.grid(alpha=0.3)
    ax.legend(
        loc="lower right", fontsize=8, title="dotted: candidate lengths; solid: chosen", title_fontsize=7
    )
    chosen_text = f"chosen length {chosen:,} steps" if chosen else "no candidate length meets the rule"
    ax.set_title(f"The Figure 3 proxy's pilot: {chosen_text}\nData: {prov['data']}", fontsize=8)
    fig.tight_layout(rect=figure_provenance(fig, prov))
    fig.savefig(png, dpi=130)
    plt.close(fig)


def render(runs: list[Run], out_dir: str | Path, command: str, spec: dict | None = None) -> list[Path]:
    page = Page.of(runs, out_dir, command, spec)
    pilot = by_lr(runs)
    lengths = candidates(runs)
    chosen = choose(pilot, lengths)
    seconds = {lr: s_per_step(r) for lr, r in pilot.items()}
    columns = {
        "L": "length L (steps)",
        **{lr: f"base LR {_lr(lr)}: plateau reached" for lr in pilot},
        "all": "every run",
    }
    rows = [{"L": f"{L:,}" + (" **(chosen)**" if L == chosen else ""), **{lr: cell(r, L) for lr, r in pilot.items()},
             "all": "yes" if all(judged(r, L)[0] for r in pilot.values()) else "no"} for L in lengths]  # fmt: skip
    decision = (
        [f"**Chosen length: L = {chosen:,} steps** (`trainer.max_steps={chosen}` for every later step of `just proxy`)."]
        if chosen
        else [f"**No candidate length up to {fmt_steps(max(lengths, default=0))} steps meets the rule: the budget "
              "cannot hold the plateau. Cut the cost of a step (a narrower net, a cheaper evaluation), not the "
              "schedule; `just proxy` stops here.**"]
    )  # fmt: skip
    timing = [{"lr": _lr(lr), "steps": fmt_steps(r.summary.get("steps") or 0), "evals": r.summary.get("evaluations", "n/a"),
               "wall": f"{r.summary.get('wall_time_s', math.nan):.0f} s", "s": f"{seconds[lr]:.3f}"}
              for lr, r in pilot.items()]  # fmt: skip
    mean_s = float(np.nanmean(list(seconds.values()))) if seconds else math.nan
    body = [
        "Inception (no BN) at two base LRs, as long as the budget affords, before the LR grid and before any BN "
        "run. Every later run of the proxy trains the length chosen here.",
        "",
        f"The rule: the candidate lengths L are the multiples of the evaluation period ({period(runs)} steps) "
        f"from {FIRST_CANDIDATE:,} steps up to the pilot's length. At each, every run is judged on its "
        "evaluations at steps <= L -- exactly the evaluations a run of length L gets, since the LR schedule "
        "and the evaluation steps do not depend on the length -- by the plateau rule (src/bnrepro/results/"
        "plateau.py: the mean accuracy over the last fifth of the evaluations minus the mean over the fifth "
        "before is below 1 point, as printed). The chosen length is the shortest L at which every run meets "
        "it; a run that stopped before L fails at L.",
        "",
        *table(columns, rows),
        "",
        *decision,
        "",
        "Each run's time (summary.json's wall time from the start of fit, evaluations included):",
        "",
        *table({"lr": "base LR", "steps": "steps", "evals": "evaluations", "wall": "wall time", "s": "s/step"}, timing),
        "",
        *budget_lines(page.spec, runs, chosen or max(lengths, default=0), mean_s),
    ]  # fmt: skip
    md = page.markdown("figure3_pilot.md", "The Figure 3 proxy's length: Inception's pilot", body)
    decided = {
        "length_steps": chosen,
        "candidates": {str(L): {_lr(lr): [reached, None if math.isnan(c) else change_points(c)]
                                for lr, r in pilot.items() for reached, c in [judged(r, L)]} for L in lengths},
        "s_per_step": {_lr(lr): None if math.isnan(s) else round(s, 4) for lr, s in seconds.items()},
    }  # fmt: skip
    out_json = page.out_dir / "figure3_pilot.json"
    out_json.write_text(json.dumps(decided, indent=1))
    png = page.out_dir / "figure3_pilot.png"
    plot(pilot, lengths, chosen, page.prov, png)
    print(f"figure3_pilot: length_steps {chosen}" + ("" if chosen else " (no length meets the plateau rule)"))
    return [md, out_json, png]
