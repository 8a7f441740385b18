"""Figure 1 of the paper from two finished runs (without and with BN): results/mnist_figure1.{png,md}.

(a) test accuracy vs training step, both nets; (b) without BN and (c) with BN: the 15th, 50th and
85th percentiles of the input to one fixed sigmoid of the last hidden layer, over the test set.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bnrepro.results.runs import RUNS_ROOT, Run, provenance, short_sha  # noqa: E402

TABLE_STEPS = (10_000, 20_000, 30_000, 40_000, 50_000)
DATA_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
PCT = ("act/p15", "act/p50", "act/p85")


def band_drift(run: Run, window: int = 5) -> float:
    """How far the 15/50/85th percentiles move over training, averaged over the three.

    Per percentile: max - min over training of its moving average over `window` evaluations (2,500
    steps at the default cadence). The average keeps evaluation-to-evaluation noise (BN evaluates
    with moving-average statistics) from counting as movement; a trend counts in full.
    """
    kernel = np.ones(window) / window
    spans = []
    for key in PCT:
        values = run.curve(key)[1]
        smooth = np.convolve(values, kernel, mode="valid") if len(values) >= window else values
        spans.append(smooth.max() - smooth.min())
    return float(np.mean(spans))


def render(runs: list[Run], out_dir: str | Path, command: str, spec: dict | None = None) -> list[Path]:
    """Figure 1 from the two nets' runs (the newest run of each model if there are several)."""
    by_model = {r.summary.get("model"): r for r in runs}
    missing = [m for m in ("mnist_mlp", "mnist_mlp_bn") if m not in by_model]
    if missing:
        raise ValueError(f"Figure 1 needs a run of mnist_mlp and mnist_mlp_bn; missing: {', '.join(missing)}")
    baseline, bn = by_model["mnist_mlp"], by_model["mnist_mlp_bn"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prov = provenance([baseline, bn], command, DATA_NAMES)
    substitute = prov["data"] != "MNIST"

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for run, label, style in ((baseline, "Without BN", "--"), (bn, "With BN", "-")):
        steps, acc = run.curve("val/acc")
        axes[0].plot(steps, acc, style, color="k", label=label)
    axes[0].set(title="(a) test accuracy", xlabel="training step", ylabel="accuracy")
    axes[0].legend(loc="lower right")
    lo, hi = np.inf, -np.inf
    for ax, run, title in ((axes[1], baseline, "(b) without BN"), (axes[2], bn, "(c) with BN")):
        for key in PCT:
            steps, v = run.curve(key)
            ax.plot(steps, v, color="k")
            lo, hi = min(lo, v.min()), max(hi, v.max())
        ax.set(title=title, xlabel="training step")
    for ax in axes[1:]:
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    unit = baseline.summary.get("percentile_unit", "last hidden layer")
    axes[1].set_ylabel(f"sigmoid input {unit}\n15th / 50th / 85th percentile", fontsize=8)
    for ax in axes:
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
    note = f"Data: {prov['data']}" + (" (stand-in for MNIST)" if substitute else "")
    title = f"Figure 1 (Ioffe & Szegedy 2015, Sec. 4.1) regenerated. {note}"
    warnings = [w.strip("*") for w in prov["warnings"]]
    fig.suptitle(title, fontsize=10)
    if warnings:  # in bold above everything else, as at the top of the table
        fig.text(0.5, 0.999, "\n".join(warnings), ha="center", va="top", fontsize=6, fontweight="bold",
                 color="darkred")  # fmt: skip
    footer = (f"{prov['command']}   trained at git {short_sha(prov['git_sha'])}, rendered at git "
              f"{short_sha(prov['rendered_sha'])}   {prov['hardware']}")  # fmt: skip
    fig.text(0.01, 0.005, footer, fontsize=6, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95 - 0.03 * len(warnings)))
    png = out_dir / "mnist_figure1.png"
    fig.savefig(png, dpi=130)
    plt.close(fig)

    md = out_dir / "mnist_figure1.md"
    md.write_text(prov["paths"](table(baseline, bn, prov, substitute)))
    return [png, md]


def fmt(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:.4f}"


def table(baseline: Run, bn: Run, prov: dict, substitute: bool) -> str:
    header = "| model | " + " | ".join(f"{s // 1000}k" for s in TABLE_STEPS) + " | best (step) |"
    lines = [header, "|---" * (len(TABLE_STEPS) + 2) + "|"]
    for name, run in (("Without BN (mnist_mlp)", baseline), ("With BN (mnist_mlp_bn)", bn)):
        accs = " | ".join(fmt(run.at_step("val/acc", s)) for s in TABLE_STEPS)
        best = f"{run.summary.get('best_acc', float('nan')):.4f} ({run.summary.get('best_step')})"
        lines.append(f"| {name} | {accs} | {best} |")
    acc_bn, acc_base = bn.at_step("val/acc", 10_000), baseline.at_step("val/acc", 10_000)
    if np.isnan(acc_bn) or np.isnan(acc_base):
        verdict_acc = "cannot be checked: no evaluation at 10k steps"
    else:
        verdict_acc = "holds" if acc_bn > acc_base else "does NOT hold"
    drift_base, drift_bn = band_drift(baseline), band_drift(bn)
    data_line = f"**Data: {prov['data']}**" + (
        " -- Fashion-MNIST (same 28x28 IDX format, 60k/10k) stands in for MNIST, which cannot be "
        "downloaded on the machine that made this file. The paper's curves are on MNIST."
        if substitute
        else ""
    )
    return "\n".join(
        [
            "# Figure 1 (Sec. 4.1): MNIST, with and without BN",
            "",
            *[line for w in prov["warnings"] for line in (w, "")],
            data_line,
            "",
            "Test accuracy on the full 10k test set (binarized inputs, 3x100 sigmoid MLP, SGD, batch 60). "
            "BN nets are evaluated in inference mode with their moving-average statistics (momentum 0.1), "
            "which makes their percentile curves noisier from one evaluation to the next:",
            "",
            *lines,
            "",
            "The paper's two claims, checked on these runs:",
            "",
            f"- BN trains faster: accuracy at 10k steps {fmt(acc_bn)} with BN vs {fmt(acc_base)} without "
            f"-> {verdict_acc}.",
            f"- BN keeps the last layer's sigmoid input steady: the 15/50/85th percentiles move by {drift_bn:.3f} "
            f"with BN vs {drift_base:.3f} without (per percentile: range over training of its moving average "
            f"over 5 evaluations; mean of the three) -> "
            f"{'holds' if drift_bn < drift_base else 'does NOT hold'}.",
            "",
            "Provenance:",
            "",
            f"- command: `{prov['command']}`",
            f"- runs trained at: {prov['git_sha']}",
            f"- rendered at: {prov['rendered_sha']}",
            f"- hardware: {prov['hardware']}; world size {prov['world_size']}, global batch {prov['global_batch']}",
            f"- runs: {prov['runs']}",
            f"- paths: relative to the repository; `{RUNS_ROOT}`: the runs folder read, where it lies outside it",
            f"- rendered: {prov['rendered']}",
            "",
        ]
    )
