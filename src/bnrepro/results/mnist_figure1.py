"""Figure 1 of the paper from the runs without and with BN: results/mnist_figure1.{png,md}.

(a) test accuracy vs training step, both nets; (b) without BN and (c) with BN: the 15th, 50th and
85th percentiles of the input to one fixed sigmoid of the last hidden layer, over the test set. With
several seeds per net: the mean over seeds, a band of ± one sample standard deviation, and mean ± std
in the table.

The paper's two claims are decided so that each can fail (`claims`):
  1a. BN trains faster: over every evaluation of the first fifth of training, not at one step;
  1b. BN ends higher: over every evaluation of the last tenth;
  2.  BN's sigmoid input is steadier: how far the percentiles move after the first tenth of training.
      The baseline starts from N(0, 0.05^2) weights, so its inputs are all near 0 at first and then
      spread out; counted from step 0 that spreading alone would make the baseline "move" more.
  3.  BN's band is no jitterier than the baseline's: the percentiles' evaluation-to-evaluation jitter
      once their trend is taken out (`jitter`), over the same evaluations as claim 2. BN nets
      evaluated with moving averages (callbacks.population_stats.eval_bn=moving) show the moving
      averages' own noise here; the inference network of Alg. 2 (`population`, Figure 1's default)
      should not.
Claims 1a, 1b and 2 hold when BN's advantage exceeds two standard errors (see `decide`); claim 3, "no
more than", holds when BN's jitter is at most the baseline's (mean over seeds).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bnrepro.results.page import Page, figure_provenance, table  # noqa: E402
from bnrepro.results.runs import Run  # noqa: E402

# Where BN's head start is largest first; then the paper's 10k-step grid up to the end.
TABLE_STEPS = (500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000)
DATA_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
PCT = ("act/p15", "act/p50", "act/p85")
MODELS = {"mnist_mlp": "Without BN", "mnist_mlp_bn": "With BN"}
EARLY = 0.2  # claim 1a: the first fifth of training (10k of the paper's 50k steps)
END = 0.1  # claim 1b: the last tenth
SETTLE = 0.1  # claim 2: movement counted after the first tenth
WINDOW = 5  # claim 2: moving average over this many evaluations (2,500 steps at the default cadence)
Z = 2.0  # a difference counts when it exceeds Z standard errors
# How the BN net was evaluated (summary.json's eval_bn; runs from before the option: moving averages).
EVAL_BN = {
    "moving": "its moving-average statistics (momentum 0.1)",
    "population": "Alg. 2's population statistics, recomputed over training mini-batches before each evaluation",
}


def newest_per_seed(runs: list[Run]) -> list[Run]:
    """One run per seed, the last given (runs come oldest first), in seed order."""
    by_seed = {r.summary.get("seed", 0): r for r in runs}
    return [by_seed[k] for k in sorted(by_seed, key=str)]


def stacked(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps every run evaluated, values [runs, steps]) of one metric."""
    empty = np.array([], dtype=int), np.array([])
    curves = [r.curve(key) if key in r.metrics else empty for r in runs]
    common = sorted(set.intersection(*(set(s.tolist()) for s, _ in curves))) if curves else []
    steps = np.array(common, dtype=int)
    values = np.array([[v[s == t][-1] for t in steps] for s, v in curves]).reshape(len(curves), len(steps))
    return steps, values


def length(runs: list[Run]) -> int:
    """The planned training length in steps (summary.json's max_steps; else the last evaluation)."""
    planned = [r.summary.get("max_steps") for r in runs if r.summary.get("max_steps")]
    return int(min(planned)) if planned else int(max(r.curve("val/acc")[0].max(initial=0) for r in runs))


def _std(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


@dataclass
class Decision:
    text: str  # what was compared, in words and numbers
    verdict: str  # "holds", "does NOT hold", or "cannot be checked: ..."


def decide(advantage: float, per_evaluation: np.ndarray, per_seed: list[np.ndarray]) -> tuple[str, float]:
    """("holds" | "does NOT hold", margin): BN's `advantage` (positive = the claim's direction) must
    exceed Z standard errors. The standard error is the larger of the evaluation-to-evaluation one
    (std of the per-evaluation differences / sqrt(n)) and, with several seeds per net, the between-seed
    one (sqrt(var_bn / n_bn + var_base / n_base) of the per-seed values)."""
    se = _std(per_evaluation) / math.sqrt(len(per_evaluation)) if len(per_evaluation) > 1 else 0.0
    if all(len(x) > 1 for x in per_seed):
        se = max(se, math.sqrt(sum(float(np.var(x, ddof=1)) / len(x) for x in per_seed)))
    se = 0.0 if math.isnan(se) else se
    return ("holds" if advantage > Z * se else "does NOT hold"), Z * se


def accuracy_claim(baseline: list[Run], bn: list[Run], lo: float, hi: float, what: str) -> Decision:
    """BN's accuracy above the baseline's over the evaluations at steps in [lo, hi]."""
    (steps_a, base), (steps_b, with_bn) = stacked(baseline, "val/acc"), stacked(bn, "val/acc")
    steps = np.intersect1d(steps_a, steps_b)
    steps = steps[(steps >= lo) & (steps <= hi)]
    if len(steps) < 2:
        last = min(int(s.max(initial=0)) for s in (steps_a, steps_b))
        return Decision(
            what, f"cannot be checked: fewer than 2 evaluations there (the runs end at {last:,} steps)"
        )
    base = base[:, np.isin(steps_a, steps)]
    with_bn = with_bn[:, np.isin(steps_b, steps)]
    gaps = with_bn.mean(0) - base.mean(0)
    verdict, margin = decide(float(gaps.mean()), gaps, [with_bn.mean(1), base.mean(1)])
    text = (
        f"{what}: over the {len(steps)} evaluations at steps {steps[0]:,}-{steps[-1]:,}, mean accuracy "
        f"{with_bn.mean():.4f} with BN vs {base.mean():.4f} without (BN higher at {int((gaps > 0).sum())} of "
        f"{len(steps)}), difference {gaps.mean():+.4f}, margin needed {margin:.4f}"
    )
    return Decision(text, verdict)


def _percentiles_after(run: Run, after: float) -> list[np.ndarray] | None:
    """The 15/50/85th percentile curves' values after step `after`; None when the run has not got them."""
    if any(key not in run.metrics for key in PCT):
        return None
    out = []
    for key in PCT:
        steps, values = run.curve(key)
        out.append(values[steps > after])
    return out


def drift(run: Run, after: float) -> float:
    """How far the 15/50/85th percentiles move after step `after`, averaged over the three.

    Per percentile: max - min of its moving average over WINDOW evaluations. The average keeps
    evaluation-to-evaluation noise (BN evaluates with moving-average statistics) from counting as
    movement; a trend counts in full.
    """
    kernel = np.ones(WINDOW) / WINDOW
    curves = _percentiles_after(run, after)
    if curves is None or not all(len(v) for v in curves):
        return math.nan
    spans = []
    for values in curves:
        smooth = np.convolve(values, kernel, mode="valid") if len(values) >= WINDOW else values
        spans.append(smooth.max() - smooth.min())
    return float(np.mean(spans))


def jitter(run: Run, after: float) -> float:
    """Detrended evaluation-to-evaluation jitter of the 15/50/85th percentiles after step `after`, averaged
    over the three.

    Per percentile: the sample standard deviation of its residual from its centred moving average over
    WINDOW evaluations (the evaluations with a full window on both sides). A trend, and any straight
    stretch of one, leaves no residual; what changes from one evaluation to the next and back does.
    """
    kernel = np.ones(WINDOW) / WINDOW
    half = WINDOW // 2
    curves = _percentiles_after(run, after)
    if curves is None or any(len(v) < WINDOW + 1 for v in curves):
        return math.nan
    spreads = []
    for values in curves:
        residual = values[half : len(values) - half] - np.convolve(values, kernel, mode="valid")
        spreads.append(_std(residual))
    return float(np.mean(spreads))


def jitter_claim(baseline: list[Run], bn: list[Run], after: float) -> Decision:
    base = np.array([jitter(r, after) for r in baseline])
    with_bn = np.array([jitter(r, after) for r in bn])
    what = "3. With BN the band is no jitterier than without"
    if np.isnan(base).any() or np.isnan(with_bn).any():
        return Decision(
            what, f"cannot be checked: fewer than {WINDOW + 1} percentile evaluations after step {after:,.0f}"
        )
    evaluated = sorted({r.summary.get("eval_bn", "moving") for r in bn})
    seeds = f"; mean over {len(bn)} / {len(baseline)} seeds" if max(len(bn), len(baseline)) > 1 else ""
    text = (
        f"{what}: jitter {with_bn.mean():.4f} vs {base.mean():.4f} (after step {after:,.0f}, per percentile: "
        f"sample standard deviation of its residual from its centred moving average over {WINDOW} evaluations; "
        f"mean of the three{seeds}; BN evaluated with {' / '.join(EVAL_BN.get(e, e) for e in evaluated)}); "
        "holds when BN's is no larger"
    )
    # 1e-9: a straight stretch leaves a residual of float rounding only, not jitter
    return Decision(text, "holds" if with_bn.mean() <= base.mean() + 1e-9 else "does NOT hold")


def steadiness_claim(baseline: list[Run], bn: list[Run], after: float) -> Decision:
    base = np.array([drift(r, after) for r in baseline])
    with_bn = np.array([drift(r, after) for r in bn])
    what = "2. BN keeps the last layer's sigmoid input steady"
    if np.isnan(base).any() or np.isnan(with_bn).any():
        return Decision(what, f"cannot be checked: no percentiles after step {after:,.0f}")
    verdict, margin = decide(float(base.mean() - with_bn.mean()), np.array([]), [with_bn, base])
    seeds = f"; mean over {len(bn)} / {len(baseline)} seeds" if max(len(bn), len(baseline)) > 1 else ""
    text = (
        f"{what}: after the first tenth of training (steps > {after:,.0f}; the baseline's N(0, 0.05^2) init "
        "starts all its inputs near 0 and their spreading out is not counted), the 15/50/85th percentiles "
        f"move by {with_bn.mean():.3f} with BN vs {base.mean():.3f} without (per percentile: range of its "
        f"moving average over {WINDOW} evaluations; mean of the three{seeds}), margin needed {margin:.3f}"
    )
    return Decision(text, verdict)


def claims(baseline: list[Run], bn: list[Run]) -> list[Decision]:
    total = length(baseline + bn)
    return [
        accuracy_claim(baseline, bn, 0, EARLY * total, "1a. BN trains faster"),
        accuracy_claim(baseline, bn, (1 - END) * total, total, "1b. BN ends higher"),
        steadiness_claim(baseline, bn, SETTLE * total),
        jitter_claim(baseline, bn, SETTLE * total),
    ]


def render(runs: list[Run], out_dir: str | Path, command: str, spec: dict | None = None) -> list[Path]:
    """Figure 1 from the two nets' runs (per net and seed, the newest run)."""
    groups = {m: newest_per_seed([r for r in runs if r.summary.get("model") == m]) for m in MODELS}
    missing = [m for m, g in groups.items() if not g]
    if missing:
        raise ValueError(f"Figure 1 needs a run of mnist_mlp and mnist_mlp_bn; missing: {', '.join(missing)}")
    baseline, bn = groups["mnist_mlp"], groups["mnist_mlp_bn"]
    page = Page.of(baseline + bn, out_dir, command, spec, DATA_NAMES)
    prov = page.prov
    substitute = prov["data"] != "MNIST"
    decisions = claims(baseline, bn)
    png = page.out_dir / "mnist_figure1.png"
    plot(baseline, bn, prov, substitute, png)
    md = page.markdown("mnist_figure1.md", "Figure 1 (Sec. 4.1): MNIST, with and without BN",
                       markdown_body(baseline, bn, prov, substitute, decisions))  # fmt: skip
    return [png, md]


def _band(ax, steps, values, style, label=None, color="k"):
    """Mean over seeds; a band of ± one sample std where there are several."""
    mean = values.mean(0)
    ax.plot(steps, mean, style, color=color, label=label)
    if len(values) > 1:
        std = values.std(0, ddof=1)
        ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, lw=0)


# Fig. 1(b, c)'s three lines, told apart by their style (the paper's are all black).
PCT_STYLES = {"act/p85": ("--", "85th percentile"), "act/p50": ("-", "50th percentile"),
              "act/p15": (":", "15th percentile")}  # fmt: skip


def sigmoid_label(unit: str | None) -> str:
    """The percentiles' axis label in words: `blocks.2.act[0]` (the callback's module and unit) is the
    input to one sigmoid of hidden layer 3, as the paper says "a typical sigmoid of the last layer"."""
    found = re.fullmatch(r"blocks\.(\d+)\.act\[\d+\]", unit or "")
    where = f"hidden layer {int(found[1]) + 1}" if found else "the last hidden layer"
    return f"input to one sigmoid of {where}"


def plot(baseline: list[Run], bn: list[Run], prov: dict, substitute: bool, png: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    total = length(baseline + bn)
    seeds = max(len(baseline), len(bn)) > 1
    for runs, label, style in ((baseline, "Without BN", "--"), (bn, "With BN", "-")):
        n = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        _band(axes[0], *stacked(runs, "val/acc"), style, label=label + n)
    # The windows claims 1a and 1b are decided on.
    axes[0].axvspan(0, EARLY * total, color="tab:blue", alpha=0.06, lw=0, label="windows of claims 1a, 1b")
    axes[0].axvspan((1 - END) * total, total, color="tab:blue", alpha=0.06, lw=0)
    axes[0].set(title="(a) test accuracy", xlabel="training step", ylabel="accuracy")
    lo, hi = np.inf, -np.inf
    for ax, runs, title in ((axes[1], baseline, "(b) without BN"), (axes[2], bn, "(c) with BN")):
        for key, (style, label) in PCT_STYLES.items():
            steps, values = stacked(runs, key)
            _band(ax, steps, values, style, label=label)
            if values.size:
                lo, hi = min(lo, values.min()), max(hi, values.max())
        ax.axvspan(0, SETTLE * total, color="0.5", alpha=0.1, lw=0, label="first tenth: not in claim 2")
        ax.set(title=title, xlabel="training step")
        ax.set_ylabel(sigmoid_label(runs[0].summary.get("percentile_unit")), fontsize=8)
    if np.isfinite(lo) and hi > lo:
        for ax in axes[1:]:
            ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    for ax in axes:
        ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k")
        ax.legend(loc="lower right" if ax is axes[0] else "best", fontsize=7,
                  title="bands: ± 1 std over seeds" if seeds else None, title_fontsize=7)  # fmt: skip
    note = f"Data: {prov['data']}" + (" (stand-in for MNIST)" if substitute else "")
    left, bottom, right, top = figure_provenance(fig, prov)
    fig.suptitle(
        f"Figure 1 (Ioffe & Szegedy 2015, Sec. 4.1) regenerated. {note}", fontsize=10, y=top, va="top"
    )
    fig.tight_layout(rect=(left, bottom, right, top - 0.06))
    fig.savefig(png, dpi=130)
    plt.close(fig)


def fmt(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:.4f}"


def _pm(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    return fmt(float(np.mean(values))) + (f" ± {fmt(_std(np.array(values)))}" if len(values) > 1 else "")


def _steps(s: int) -> str:
    return f"{s // 1000}k" if s >= 1000 and s % 1000 == 0 else str(s)


def test_set(runs: list[Run]) -> str:
    """The test images each evaluation used, from summary.json's val_examples."""
    sizes = sorted({r.summary.get("val_examples") for r in runs}, key=str)
    if None in sizes:
        return "the test set (its size is not recorded in these runs)"
    counts = " / ".join(f"{n:,}" for n in sizes)
    return f"{counts} test images"


def evaluated(bn: list[Run]) -> str:
    """How the BN net's evaluations were made, from its runs' summary.json."""
    ways = sorted({r.summary.get("eval_bn", "moving") for r in bn})
    text = "The BN net is evaluated in inference mode with " + " / ".join(EVAL_BN.get(w, w) for w in ways)
    if "moving" in ways:
        text += ", which makes its curves noisier from one evaluation to the next"
    return text + "."


def accuracy_table(baseline: list[Run], bn: list[Run]) -> list[str]:
    """Per net: the accuracy at TABLE_STEPS and the best (at which steps), mean ± std over seeds."""
    columns = {"model": "model", **{s: _steps(s) for s in TABLE_STEPS}, "best": "best (step)"}
    rows = []
    for (model, label), runs in zip(MODELS.items(), (baseline, bn)):
        best = _pm([float(r.summary.get("best_acc", math.nan)) for r in runs])
        at = ", ".join(str(r.summary.get("best_step")) for r in runs)
        rows.append({"model": f"{label} ({model})", **{s: _pm([r.at_step("val/acc", s) for r in runs])
                     for s in TABLE_STEPS}, "best": f"{best} ({at})"})  # fmt: skip
    return table(columns, rows)


def markdown_body(
    baseline: list[Run], bn: list[Run], prov: dict, substitute: bool, decisions: list[Decision]
) -> list[str]:
    """The page's own lines, between page.py's data banner and its provenance list."""
    lines = accuracy_table(baseline, bn)
    seeds = max(len(baseline), len(bn))
    spread = (
        f" Cells are mean ± sample standard deviation over {seeds} seeds ({len(baseline)} without BN, "
        f"{len(bn)} with BN); the plot's bands are ± one such standard deviation."
        if seeds > 1
        else " One seed per net."
    )
    stand_in = [
        f"{prov['data']} (same 28x28 IDX format, 60k/10k) stands in for MNIST, which cannot be downloaded on the "
        "machine that made this file. The paper's curves are on MNIST.",
        "",
    ]
    return [
        *(stand_in if substitute else []),
        f"Test accuracy on {test_set(baseline + bn)} (binarized inputs, 3x100 sigmoid MLP, SGD, global "
        f"batch {prov['global_batch']}). {evaluated(bn)}{spread}",
        "",
        *lines,
        "",
        "The paper's two claims, checked on these runs, and whether BN's band is as smooth as the "
        f"baseline's. Claims 1 and 2 hold when BN's advantage exceeds {Z:g} standard errors: the larger of "
        "the evaluation-to-evaluation one and, with several seeds, the between-seed one (the `margin "
        "needed`); claim 3 holds when BN's jitter is no larger than the baseline's:",
        "",
        *[f"- {d.text} -> {d.verdict}." for d in decisions],
    ]
