"""Data modules, one class per kind of data set, each built from its `data` config file by
`hydra.utils.instantiate` (the file's schema names the class in `_target_`; see docs/design.md,
"Adding a data set").

    device_loader.py  StepStreamDataModule, the base: the step-stream sampler, one evaluation period
                      per Lightning epoch, each rank its own shard
    tensors.py        sets held whole as tensors (MNIST, Fashion-MNIST, synthetic)
    mnist.py, synthetic.py, imagenet.py   the data sets
    images.py, image_batches.py           image files: decoding and transforms; mini-batches decoded
                                          in DataLoader workers (an unreadable file, under DDP too)
"""

import importlib
import pkgutil

# Commands in this package, not data sets: `python -m bnrepro.data.prepare` composes conf/ (bnrepro/
# compose.py, which registers the schemas by importing this package), so importing it here would be a
# circle. tests/test_imports.py reads this set.
COMMANDS = {"prepare"}

# Import every other module of this package, so each data module's @schema is in Hydra's ConfigStore
# before a config is composed (a new data set's file registers itself; nothing lists it).
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in COMMANDS:
        importlib.import_module(f"{__name__}.{_module.name}")
