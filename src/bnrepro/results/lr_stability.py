"""Sec. 3.3 "Batch Normalization enables higher learning rates", tested on the proxy:
results/lr_stability.{md,png} from the runs of experiment=fashion_lr_stability (the network without BN,
inception, and with BN, bn_baseline, each at several multipliers of the proxy's tuned base LR) and, in a
section of their own, the sigmoid pair of experiment=fashion_lr_stability_sigmoid (Inception-Sigmoid and
BN-x5-Sigmoid at x1). reproduce.py hands over both tasks' runs whichever one was run (the spec's
`companions`, passed as spec["companion_runs"]), so the page always shows both.

Per net and multiplier: the initial LR, diverged (at which step) or not, the max accuracy (at step), the
final accuracy and the steps to the baseline's maximum -- the baseline being the net without BN at x1, as
Figure 3's target is Inception's maximum. The figure: the accuracy curves per multiplier, one panel per
net, a cross where a run diverged.

The claim is decided by a rule that can fail (`claim`): a run *trains* when it does not diverge and its
max accuracy reaches TRAINS of the baseline's maximum; per net, the largest multiplier at which every run
trains; the claim holds when that is larger with BN than without, over the multipliers both nets were run
at. If both train at the largest one tried, the runs cannot tell them apart and the claim does NOT hold.
The sigmoid pair by the same rule: BN makes the sigmoid net trainable when BN-x5-Sigmoid trains and
Inception-Sigmoid does not. The paper's precondition (`precondition`, Sec. 4.2.1: Inception at 5x the LR
diverged) holds when every run of the net without BN at x5 diverges or does not train; figure3.md cites it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bnrepro.results.cells import fmt_steps, pct  # noqa: E402
from bnrepro.results.page import Page, figure_provenance, steps_axis, table  # noqa: E402
from bnrepro.results.runs import (  # noqa: E402
    Run,
    accuracy_curve,
    best,
    diverged_at,
    divergence_mark,
    final_accuracy,
    reaches,
    steps_to,
)
from bnrepro.variants import FIGURE3, LR_PAIR, SIGMOID_PAIR  # noqa: E402  (the pairs, labels, colours)

# Each pair without BN first (variants.py): Sec. 4.2.2's Inception and BN-Baseline, which differ only by BN;
# the sigmoid pair, which differs by BN and the Sec. 4.2.1 changes.
NETS = {m: f"{role} ({FIGURE3[m].label})" for role, m in zip(("without BN", "with BN"), LR_PAIR)}
SIGMOID_NETS = {m: f"{role} ({FIGURE3[m].label})" for role, m in zip(("without BN", "with BN"), SIGMOID_PAIR)}
BASELINE = LR_PAIR[0]  # its x1 run's maximum is the accuracy to reach (as Figure 3's target)
PRECONDITION = 5.0  # Sec. 4.2.1: Inception at 5x its LR diverged; BN-x5's first change is that LR
TRAINS = 0.9  # a run trains when it does not diverge and its max is at least 90% of the baseline's max


def multiplier(run: Run) -> float:
    return float(run.summary.get("lr_multiplier") or 1)


def grouped(runs: list[Run]) -> dict[tuple[str, float], list[Run]]:
    """(net, multiplier) -> its runs, one per seed (the newest: runs come oldest first), seed order."""
    out: dict[tuple[str, float], dict] = {}
    for r in runs:
        if r.summary.get("model") in NETS | SIGMOID_NETS:
            out.setdefault((r.summary["model"], multiplier(r)), {})[r.summary.get("seed", 0)] = r
    return {k: [v[s] for s in sorted(v, key=str)] for k, v in out.items()}


def baseline_max(groups: dict[tuple[str, float], list[Run]]) -> float | None:
    """The mean over seeds of the max accuracy of the net without BN at x1; None without such a run."""
    finished = [r for r in groups.get((BASELINE, 1.0), []) if r.finished]
    return sum(best(r)[0] for r in finished) / len(finished) if finished else None


def trains(run: Run, target: float) -> bool:
    """Finished, and its max at least TRAINS of `target`, up to the tolerance every accuracy comparison
    uses (runs.reaches): a run at exactly 90% trains, whatever the last bit of 0.9 * target."""
    return run.summary.get("status") == "finished" and reaches(best(run)[0], TRAINS * target)


@dataclass
class Claim:
    largest: dict[str, float | None]  # per net: the largest multiplier at which every run trains
    verdict: str  # "holds", "does NOT hold", or "cannot be checked: ..."
    text: str


def claim(groups: dict[tuple[str, float], list[Run]]) -> Claim:
    target = baseline_max(groups)
    nobn, bn = NETS
    common = sorted({m for n, m in groups if n == nobn} & {m for n, m in groups if n == bn})
    if target is None:
        return Claim({}, "cannot be checked: no finished run of the net without BN at x1", "")
    largest = {
        net: max((m for m in common if all(trains(r, target) for r in groups[(net, m)])), default=None)
        for net in NETS
    }
    holds = largest[bn] is not None and (largest[nobn] is None or largest[bn] > largest[nobn])
    verdict = "holds" if holds else "does NOT hold"
    if common and largest[bn] == largest[nobn] == common[-1]:
        verdict += f" (both train at every multiplier tried, up to x{common[-1]:g}: a larger one would tell them apart)"

    def said(m):
        return "none" if m is None else f"x{m:g}"

    text = (
        f"BN enables higher learning rates (Sec. 3.3): the largest multiplier of the tuned base LR at which "
        f"the net trains (no divergence, max accuracy at least {TRAINS:.0%} of the baseline's "
        f"{pct(target)}), over the multipliers both nets were run at ({', '.join(f'x{m:g}' for m in common)}), "
        f"is {said(largest[bn])} with BN vs {said(largest[nobn])} without"
    )
    return Claim(largest, verdict, text)


def sigmoid_claim(groups: dict[tuple[str, float], list[Run]]) -> str:
    """The sigmoid pair at each multiplier it was run at: BN makes the sigmoid net trainable when every
    run with BN trains and no run without BN does (`trains`, against the same baseline)."""
    target = baseline_max(groups)
    nobn, bn = SIGMOID_NETS
    common = sorted({m for n, m in groups if n == nobn} & {m for n, m in groups if n == bn})
    if not common:
        return "not run (no run of both sigmoid nets at one multiplier)"
    if target is None:
        return "cannot be checked: no finished run of the net without BN at x1"
    said = []
    for m in common:
        with_bn, without = (all(trains(r, target) for r in groups[(net, m)]) for net in (bn, nobn))
        verdict = "holds" if with_bn and not without else "does NOT hold"
        said.append(f"at x{m:g}, BN-x5-Sigmoid {'trains' if with_bn else 'does not train'} and Inception-Sigmoid "
                    f"{'trains' if without else 'does not'} -> {verdict}")  # fmt: skip
    return "; ".join(said)


def precondition(groups: dict[tuple[str, float], list[Run]]) -> tuple[str, str]:
    """(verdict, text) of the paper's precondition, Sec. 4.2.1: Inception at 5x the LR diverged. It holds
    when every run of the net without BN at x5 trains clearly worse or diverges: it diverges, or does not
    *train* (`trains`: max below TRAINS of the x1 run's maximum, with the shared tolerance). `not run`
    without such a run."""
    runs = groups.get((BASELINE, PRECONDITION), [])
    target = baseline_max(groups)
    if not runs:
        return "not run", f"no run of the net without BN at x{PRECONDITION:g}"
    if target is None and any(r.summary.get("status") != "diverged" for r in runs):
        return "cannot be checked", "no finished run of the net without BN at x1 to compare with"
    worse = [r.summary.get("status") == "diverged" or not trains(r, target) for r in runs]
    verdict = "holds" if all(worse) else "does NOT hold"
    cells = "; ".join(f"seed {r.summary.get('seed', 0)}: {outcome(r, target)}" for r in runs)
    return verdict, (
        f"Inception at x{PRECONDITION:g} the tuned base LR ({cells}) -- it holds when every such run diverges or "
        f"does not train (max below {TRAINS:.0%} of the x1 run's {pct(target) if target is not None else 'n/a'})"
    )


def outcome(run: Run, target: float | None) -> str:
    at = diverged_at(run)
    if run.summary.get("status") == "diverged":
        return f"diverged at {fmt_steps(at)}" if at is not None else "diverged (step unknown)"
    if not run.finished:
        return run.summary.get("status", "unknown")
    if target is None:
        return "finished"
    return "trains" if trains(run, target) else f"does not train (max below {TRAINS:.0%} of the baseline's)"


def lr_table(
    groups: dict[tuple[str, float], list[Run]], target: float | None, nets: dict = NETS
) -> list[str]:
    reach = pct(target) if target is not None else "the baseline's max"
    columns = {"net": "net", "m": "multiplier", "lr": "initial LR", "seed": "seed", "outcome": "outcome",
               "max": "max accuracy (at step)", "final": "final accuracy", "reached": f"steps to {reach}"}  # fmt: skip
    rows = []
    for net, label in nets.items():
        for m in sorted({m for n, m in groups if n in nets}):
            runs = groups.get((net, m), [])
            if not runs:
                rows.append({**dict.fromkeys(columns, "missing"), "net": label, "m": f"x{m:g}", "lr": "n/a",
                             "seed": "n/a"})  # fmt: skip
            rows += [{"net": label, "m": f"x{m:g}", **table_row(r, target)} for r in runs]
    return table(columns, rows)


def table_row(run: Run, target: float | None) -> dict[str, str]:
    """A run's cells: initial LR, seed, outcome, max (at step), final, steps to the target."""
    top, at = best(run)
    hit = steps_to(run, target) if target is not None else None
    return {
        "lr": f"{run.summary.get('lr', math.nan):g}",
        "seed": str(run.summary.get("seed", 0)),
        "outcome": outcome(run, target),
        "max": f"{pct(top)} at {fmt_steps(at)}",
        "final": pct(final_accuracy(run)) if run.finished else "n/a",
        "reached": fmt_steps(hit) if hit is not None else ("n/a" if target is None else "never"),
    }


def plot(groups: dict[tuple[str, float], list[Run]], target: float | None, prov: dict, png: Path) -> None:
    pair = any(n in SIGMOID_NETS for n, _ in groups)  # a third panel for the sigmoid pair
    fig, axes = plt.subplots(1, 2 + pair, figsize=(11 + 4.5 * pair, 4.2), sharey=True)
    multipliers = sorted({m for n, m in groups if n in NETS})
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(multipliers)}  # the same in both panels
    if pair:
        sigmoid_panel(axes[2], groups, target)
    for ax, (net, label) in zip(axes, NETS.items()):
        for m in multipliers:
            for i, r in enumerate(groups.get((net, m), [])):
                ax.plot(*accuracy_curve(r), color=colors[m], lw=1.2, label=f"x{m:g}" if i == 0 else None)
                if (mark := divergence_mark(r)) is not None:
                    ax.plot(*([x] for x in mark), "x", color=colors[m], ms=9, mew=2)
        if target is not None:
            ax.axhline(target, color="0.5", lw=0.8, ls=":")
        ax.set(title=label, xlabel="paper-equivalent steps (examples seen / 32)")
        steps_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8, title="LR multiplier; x: diverged", title_fontsize=7)
    axes[0].set_ylabel("single-crop top-1 accuracy")
    base = f"dotted: the baseline's max {pct(target)}" if target is not None else "no baseline run"
    left, bottom, right, top = figure_provenance(fig, prov, base)
    fig.suptitle(
        f"BN enables higher learning rates (Sec. 3.3). Data: {prov['data']}", fontsize=8, y=top, va="top"
    )
    fig.tight_layout(rect=(left, bottom, right, top - 0.04))
    fig.savefig(png, dpi=130)
    plt.close(fig)


def sigmoid_panel(ax, groups: dict[tuple[str, float], list[Run]], target: float | None) -> None:
    """The sigmoid pair's curves, each net in its Figure 3 colour (variants.py), a cross where one diverged."""
    for (net, m), runs in sorted(groups.items()):
        if net not in SIGMOID_NETS:
            continue
        v = FIGURE3[net]
        for i, r in enumerate(runs):
            ax.plot(
                *accuracy_curve(r),
                v.line,
                color=v.color,
                lw=1.2,
                label=f"{v.label} x{m:g}" if i == 0 else None,
            )
            if (mark := divergence_mark(r)) is not None:
                ax.plot(*([x] for x in mark), "x", color=v.color, ms=9, mew=2)
    if target is not None:
        ax.axhline(target, color="0.5", lw=0.8, ls=":")
    ax.set(title="the sigmoid pair", xlabel="paper-equivalent steps (examples seen / 32)")
    steps_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, title="x: diverged", title_fontsize=7)


def render(runs: list[Run], out_dir: str | Path, command: str, spec: dict | None = None) -> list[Path]:
    runs = [*runs, *(spec or {}).get("companion_runs", [])]  # the other task's runs: both sections
    page = Page.of(runs, out_dir, command, spec)
    groups = grouped(runs)
    target = baseline_max(groups)
    decided = claim(groups)
    verdict, why = precondition(groups)
    body = [
        "The network without BN (Inception) and with BN and nothing else changed (BN-Baseline) at "
        "multiples of the proxy's tuned base LR (`lr_multiplier.base`, chosen by results/figure3_lr_grid.md). "
        "Accuracies are single-crop top-1 on the proxy's test images; steps are paper-equivalent (examples "
        f"seen / 32). The baseline is the net without BN at x1; `steps to {pct(target) if target else '...'}`: "
        "the first evaluation at or above its maximum (`never`: not reached). `diverged at`: the step at "
        "which the training loss became non-finite.",
        "",
        *lr_table(groups, target),
        "",
        f"A run *trains* when it does not diverge and its max accuracy reaches {TRAINS:.0%} of the "
        "baseline's; per net, the largest multiplier at which every run trains. The claim holds when that "
        "multiplier is larger with BN than without.",
        "",
        f"- {decided.text} -> {decided.verdict}." if decided.text else f"- {decided.verdict}.",
        f"- The paper's precondition (Sec. 4.2.1: Inception at 5x the LR diverged): {why} -> {verdict}.",
        "",
        "## The sigmoid pair",
        "",
        "Inception-Sigmoid (no BN) and BN-x5-Sigmoid (BN and the Sec. 4.2.1 changes) at the same LR "
        "(experiment=fashion_lr_stability_sigmoid). Whether BN makes the saturating nonlinearity trainable "
        "(Sec. 3.3; the paper: BN-x5-Sigmoid reaches 69.8%, Inception-Sigmoid never better than 0.1%), by the "
        "rule above: the pair's claim holds when BN-x5-Sigmoid trains and Inception-Sigmoid does not.",
        "",
        *(
            lr_table(groups, target, SIGMOID_NETS)
            if any(n in SIGMOID_NETS for n, _ in groups)
            else [
                "No run of the pair: `just reproduce lr_stability experiment=fashion_lr_stability_sigmoid_cpu "
                "trainer.max_steps=<L> lr_multiplier.base=<LR>` (the 2-core scale) makes them."
            ]
        ),
        "",
        f"- BN makes the sigmoid net trainable: {sigmoid_claim(groups)}.",
    ]
    md = page.markdown("lr_stability.md", "BN enables higher learning rates (Sec. 3.3): LR multipliers with and "
                       "without BN", body)  # fmt: skip
    png = page.out_dir / "lr_stability.png"
    plot(groups, target, page.prov, png)
    return [md, png]
