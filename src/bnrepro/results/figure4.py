"""Figure 4 of the paper from evaluation records (src/eval.py's eval.json): results/figure4.md.

Top-1 and top-5 error of BN-Inception with one crop, 144 crops and an ensemble, next to the paper's
rows and its reference rows. The newest evaluation of each (weights, members, crops, data) is shown.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from bnrepro.results import page as _page
from bnrepro.results.page import RUNS_ROOT, RelativePaths, commit_warnings, frame, short_sha, table

# Figure 4 of the paper, ImageNet validation (top-5 of the ensemble: 4.82% on the test server).
PAPER = [
    ("BN-Inception", "single crop", "25.2%", "7.82%"),
    ("BN-Inception", "144 crops", "21.99%", "5.82%"),
    ("BN-Inception ensemble of 6", "144 crops", "20.1%", "4.9% (test server 4.82%)"),
    ("GoogLeNet ensemble of 7", "144 crops", "-", "6.67%"),
    ("Deep Image low-res", "-", "-", "7.96%"),
    ("Deep Image high-res", "-", "24.88%", "7.42%"),
    ("Deep Image ensemble", "-", "-", "5.98%"),
]
PUBLISHED = "73.5% / 91.6% top-1 / top-5 (Cadene's port of the Caffe model, single crop)"


def _key(e: dict) -> tuple:
    """One row per network(s) and protocol: a re-evaluation of the same checkpoints replaces its row."""
    return (e.get("weights"), tuple(e.get("checkpoints", [])), e.get("crops"), e.get("data"))


def summaries(e: dict) -> list[dict]:
    """The summary.json of each evaluated network's run (beside its checkpoints/), where it is here."""
    out = []
    for ckpt in e.get("checkpoints", []):
        summary = Path(ckpt).parent.parent / "summary.json"
        if summary.is_file():
            out.append(json.loads(summary.read_text()))
    return out


def training(e: dict) -> str:
    """How the evaluated networks were trained, from their runs' summary.json (beside checkpoints/)."""
    if e.get("weights") == "caffe_port":
        return "published (Caffe), trained on imagenet"
    facts = {
        f"trained on {s.get('data', '?')}: {s.get('hardware', '?')}, world size {s.get('world_size')}, "
        f"global batch {s.get('global_batch')}, git {short_sha(str(s.get('git_sha', '?')))}"
        for s in summaries(e)
    }
    return "; ".join(sorted(facts)) or "unknown (run folders not here)"


def comparable(e: dict) -> str:
    """Whether a row compares with the paper's: networks trained on ImageNet, evaluated on ImageNet."""
    if e.get("data") != "imagenet":
        return f"no: evaluated on {e.get('data')}"
    if e.get("weights") == "caffe_port":
        return "yes"
    trained = sorted({str(s.get("data")) for s in summaries(e)})
    if len(summaries(e)) < len(e.get("checkpoints", [])) or not trained:
        return "unknown: run folders not here"
    others = [d for d in trained if d != "imagenet"]
    return f"no: trained on {', '.join(others)}" if others else "yes"


def _err(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"  # top-5 is n/a with 5 classes or fewer


def network(e: dict) -> str:
    if e.get("weights") == "caffe_port":
        return "BN-Inception, published weights (Caffe model, Cadene's port)"
    members = e.get("members", 1)
    name = e.get("model", "run")
    return f"ensemble of {members} {name}" if members > 1 else name


COLUMNS = {"network": "network", "protocol": "protocol", "data": "data", "images": "images", "top1": "top-1 error",
           "top5": "top-5 error", "evaluated": "evaluated on (world size), git", "trained": "trained on",
           "comparable": "comparable to the paper"}  # fmt: skip
PAPER_COLUMNS = ("network", "protocol", "top-1 error", "top-5 error")


def table_row(e: dict) -> dict[str, str]:
    """One evaluation's cells (COLUMNS)."""
    return {"network": network(e), "protocol": e["protocol"], "data": e["data"], "images": str(e["num_images"]),
            "top1": _err(e["top1_err"]), "top5": _err(e.get("top5_err")),
            "evaluated": f"{e.get('hardware', '?')} ({e.get('world_size', '?')}), {short_sha(str(e.get('git_sha', '?')))}",
            "trained": training(e), "comparable": comparable(e)}  # fmt: skip


def render(evals: list[dict], out_dir: str | Path, command: str, spec: dict | None = None) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    newest = {_key(e): e for e in sorted(evals, key=lambda e: e.get("finished_at", ""))}
    rows = sorted(
        newest.values(), key=lambda e: (e.get("weights") != "caffe_port", e.get("members", 1), e.get("crops"))
    )
    lines = table(COLUMNS, [table_row(e) for e in rows])
    if not rows:
        lines.append(
            "| (no evaluation yet: `python src/eval.py ...` or `just reproduce figure4`) | | | | | | | | |"
        )
    paper = table(dict(zip(PAPER_COLUMNS, PAPER_COLUMNS)), [dict(zip(PAPER_COLUMNS, r)) for r in PAPER])
    trained = sorted({str(s.get("git_sha") or "unknown") for e in rows for s in summaries(e)})
    evaluated = sorted({str(e.get("git_sha") or "unknown") for e in rows})
    rendered = _page.git_sha()  # looked up at call time: tests set the commit there
    paths = RelativePaths.of(
        [e.get("path", "") for e in rows]
        + [Path(c).parent.parent for e in rows for c in e.get("checkpoints", [])],
        [str(e.get("command", "")) for e in rows],
        marker="eval",
    )
    md = out_dir / "figure4.md"
    md.write_text(frame("Figure 4 (Sec. 4.2.3): single crop, 144 crops and ensembles, top-1 / top-5 error",
                        commit_warnings(trained + evaluated, rendered, "networks were trained or evaluated"), [
        "This repository's evaluations (src/eval.py; 144 crops = 4 scales x 3 squares x 6 crops x mirror, "
        "docs/paper.md Sec. 5; ensembles average class probabilities). `data`: the set evaluated on; only rows "
        "whose networks were also trained on `imagenet` (`comparable to the paper`: yes) compare with the "
        f"paper's. Published weights for checking the protocols: {PUBLISHED}.",
        "",
        *lines,
        "",
        "The paper's Figure 4 (ImageNet validation set):",
        "",
        *paper,
    ], [  # the evaluations' provenance: they, not runs, are what this file is made from
        "Provenance:",
        "",
        f"- command: `{command}`",
        f"- {len(rows)} evaluations: " + ", ".join(f"{e.get('path', '?')} ({', '.join(e.get('checkpoints', []))})"
                                                  for e in rows),
        f"- networks trained at: {', '.join(trained) or 'n/a'}",
        f"- evaluated at: {', '.join(evaluated) or 'n/a'}",
        f"- rendered at: {rendered}",
        f"- paths: relative to the repository; `{RUNS_ROOT}`: the runs folder read, where it lies outside it",
        f"- rendered: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        "",
    ], paths))  # fmt: skip
    return [md]
