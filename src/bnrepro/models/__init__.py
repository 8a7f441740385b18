"""Networks of the paper, registered with timm on import (timm.create_model("mnist_mlp", ...))."""

from bnrepro.models import mlp  # noqa: F401  (registers the entry points)
