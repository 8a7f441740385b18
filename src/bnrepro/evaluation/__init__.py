"""Figure 4's evaluation protocols (`python src/eval.py`): single crop, 144 crops, ensembles.

config.py    the eval_schema (EvalConfig) and its checks, the default output folder's name
crops.py     crop geometry (a pure function of the image size) and the uint8 crop transforms
members.py   networks to evaluate: rebuilt from a run's checkpoint, or the published Caffe port
ensemble.py  the LightningModule: class probabilities averaged over crops, then over members
data.py      the validation folder, read as one disjoint shard per rank
evaluate.py  evaluate(cfg): all of the above, then <out>/eval.json
"""
