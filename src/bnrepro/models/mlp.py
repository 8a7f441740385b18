"""The MNIST network of Sec. 4.1: 784 -> 100 -> 100 -> 100 -> 10, sigmoid hidden units.

With `norm="batchnorm"` every hidden layer is z = g(BN(W u)): BN sits right before the nonlinearity and
the layer's bias is dropped, since BN's beta replaces it (Sec. 3).
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn

from bnrepro.models.layers import make_act_layer, make_norm_layer


class MLPBlock(nn.Module):
    """fc -> norm -> act. The input of `act` is the "sigmoid input" plotted in Figure 1(b,c)."""

    def __init__(self, in_features: int, out_features: int, norm_layer, act_layer):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features, bias=norm_layer is None)
        self.norm = norm_layer(out_features) if norm_layer is not None else nn.Identity()
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.fc(x)))


class MLP(nn.Module):
    """Fully connected classifier with timm's interface (forward_features / forward_head)."""

    def __init__(
        self,
        in_features: int = 784,
        hidden: tuple[int, ...] = (100, 100, 100),
        num_classes: int = 10,
        norm: str = "none",
        act_layer: str = "sigmoid",
        init_std: float = 0.05,
        init_seed: int = 0,
        bn_group: int | None = None,
    ):
        super().__init__()
        norm_layer = make_norm_layer(norm, dim=1, bn_group=bn_group)
        act = make_act_layer(act_layer)
        widths = [in_features, *hidden]
        self.blocks = nn.Sequential(*(MLPBlock(i, o, norm_layer, act) for i, o in zip(widths, widths[1:])))
        self.num_features = widths[-1]
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.init_weights(init_std, init_seed)

    @torch.no_grad()
    def init_weights(self, std: float, seed: int) -> None:
        # Sec. 4.1 "weights initialized to small random Gaussian values". A private generator makes the
        # weights identical with and without BN for one seed (nn.Linear's own init draws a different
        # number of values when the bias is dropped, which would shift a shared global RNG).
        gen = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, std, generator=gen)
                if m.bias is not None:
                    m.bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.flatten(1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


@register_model
def mnist_mlp(pretrained: bool = False, **kwargs) -> MLP:
    """timm entry point: `timm.create_model("mnist_mlp", norm="batchnorm")`. No pretrained weights."""
    if pretrained:
        raise ValueError("mnist_mlp has no pretrained weights")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return MLP(**kwargs)
