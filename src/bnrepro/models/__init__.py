"""Networks of the paper, registered with timm on import (timm.create_model("bn_inception", ...))."""

from bnrepro.models import bn_inception, mlp  # noqa: F401  (registers the entry points)
