"""The ImageNet variants of Figures 2 and 3 (docs/paper.md Sec. 4): the one list of them -- Figure 3's
five rows and the sigmoid Inception without BN of Sec. 4.2.2's text.

Each name is a config of conf/model/. This table is read by
- conf/experiment/{imagenet,imagenette,fashion}_figure3.yaml, whose sweep is
  `hydra.sweeper.params.model: ${figure3_variants:}` (the resolver below: the names, comma-separated), so
  `python src/train.py experiment=...` and `just reproduce figure2|figure3` run these, in this order;
- results/figure3.py (one row each, in this order, with the label and the paper's numbers) and
  results/figure2.py (one curve each, in the colour and line style given);
- results/lr_stability.py (its two pairs, LR_PAIR and SIGMOID_PAIR, with their labels).
A new variant is conf/model/<name>.yaml plus one entry here; without the paper's numbers its row says
n/a there, and without a colour its curve takes matplotlib's next one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    label: str  # as Figure 3 of the paper names it
    color: str | None = None  # Figure 2's curve: a matplotlib colour (None: the next of the cycle)
    line: str = "-"  # ... and line style
    paper_max: float | None = None  # Figure 3 of the paper: max single-crop top-1 (None: not in the paper)
    paper_steps: float | None = None  # ... and steps to 72.2% (None: never reached, or not in the paper)
    # Instead of paper_max, the bound the paper's text gives ("never achieves better than 1/1000"): a
    # variant the paper reports without a number of Figure 3.
    paper_at_most: float | None = None
    note: str = ""  # beside the paper's numbers in the table

    @property
    def in_paper(self) -> bool:
        """The paper reports it (its steps, if None, are then "never"); else its paper columns are n/a."""
        return self.paper_max is not None or self.paper_at_most is not None


FIGURE3 = {
    "inception": Variant("Inception", "k", "--", paper_max=0.722, paper_steps=31.0e6),
    "bn_baseline": Variant("BN-Baseline", "tab:blue", paper_max=0.727, paper_steps=13.3e6),
    "bn_x5": Variant("BN-x5", "tab:green", paper_max=0.730, paper_steps=2.1e6),
    "bn_x30": Variant("BN-x30", "tab:red", paper_max=0.748, paper_steps=2.7e6, note="max at about 6e6 steps"),
    "bn_x5_sigmoid": Variant("BN-x5-Sigmoid", "tab:purple", "-.", paper_max=0.698, paper_steps=None),
    # Sec. 4.2.2's text, not a row of Figure 3: "Without Batch Normalization, Inception with sigmoid never
    # achieves better than 1/1000 accuracy" -- chance on 1000 classes (on a 10-class proxy, 10%).
    "inception_sigmoid": Variant(
        "Inception-Sigmoid",
        "tab:gray",
        ":",
        paper_at_most=0.001,
        note="chance on 1000 classes; Sec. 4.2.2's text, not Figure 3",
    ),
}
REFERENCE = "inception"  # Figure 3's default target is this variant's maximum (the paper's 72.2%)
# Sec. 3.3's LR sweep and its sigmoid pair (results/lr_stability.py), each (without BN, with BN): BN-Baseline
# is Inception with BN and nothing else; BN-x5-Sigmoid adds Sec. 4.2.1's changes to Inception-Sigmoid + BN.
LR_PAIR = ("inception", "bn_baseline")
SIGMOID_PAIR = ("inception_sigmoid", "bn_x5_sigmoid")


def figure3_variants() -> str:
    """`${figure3_variants:}`: the names as a Hydra sweep (`inception,bn_baseline,...`)."""
    return ",".join(FIGURE3)
