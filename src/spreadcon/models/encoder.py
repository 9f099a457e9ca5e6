"""Encoder = backbone + optional projection head `proj` (timm's forward_features / forward split).

    forward_features(x [B, *input_shape]) -> [B, feature_dim]   the backbone embedding
    forward(x)                            -> [B, embed_dim]     proj's output (identity if no proj)

The paper and its authors use no projection head: the contrastive loss and the cross-entropy
head both read the backbone embedding, so `proj` defaults to None and embed_dim == feature_dim.
(The cross-entropy head is `Classifier.head`, in spreadcon.models.classifier.)
Losses L2-normalise what they receive; the encoder returns unnormalised vectors.

`data_config` is None for spreadcon's own encoders (they take the data as it is); for a timm or
torchvision backbone it is the model's pretrained input size and normalisation,
{"input_size": (C, H, W), "mean": (C floats), "std": (C floats), "interpolation", "crop_pct"}, which
the data side resizes and normalises with (spreadcon.build, spreadcon.data.views.fit_to_model). `init_source` says where the backbone's initial
weights came from ({"pretrained", "weights", "dropped", "adapted"}; None for random init).
`backbone_frozen` (set by spreadcon.models.finetune.set_backbone_trainable) keeps the backbone in
eval mode through `train()`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Encoder(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, input_shape: tuple[int, ...], *,
                 proj: nn.Module | None = None, embed_dim: int | None = None, name: str = "",
                 options: dict[str, Any] | None = None, data_config: dict[str, Any] | None = None,
                 init_source: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj = proj if proj is not None else nn.Identity()
        self.feature_dim = int(feature_dim)
        if proj is not None and embed_dim is None:
            raise ValueError("Encoder: give embed_dim (proj's output width) together with proj")
        self.embed_dim = int(feature_dim if proj is None else embed_dim)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.name = name
        self.options = dict(options or {})
        self.data_config = None if data_config is None else dict(data_config)
        self.init_source = None if init_source is None else dict(init_source)
        self.backbone_frozen = False

    @property
    def has_projection(self) -> bool:
        """True when a projection head `proj` follows the backbone (proj is not Identity)."""
        return not isinstance(self.proj, nn.Identity)

    def train(self, mode: bool = True) -> "Encoder":
        """As nn.Module.train, but a frozen backbone stays in eval mode (BatchNorm statistics fixed)."""
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def check_input(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"encoder {self.name!r} was built for inputs of shape [B, {', '.join(map(str, self.input_shape))}], "
                f"got {list(x.shape)}; build the encoder with the data's input_shape"
            )

    def forward_features(self, x: Tensor) -> Tensor:
        """x [B, *input_shape] -> [B, feature_dim]."""
        self.check_input(x)
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, *input_shape] -> [B, embed_dim]."""
        return self.proj(self.forward_features(x))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_shape={self.input_shape}, feature_dim={self.feature_dim}, embed_dim={self.embed_dim}"


def image_shape(name: str, input_shape: tuple[int, ...], min_size: int = 4, max_channels: int = 4) -> tuple[int, int, int]:
    """Validate a channels-first image shape (C, H, W) for encoder `name` and return it."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"encoder {name!r} expects images of shape (C, H, W), got input_shape {shape}; "
            f"for vector data use the 'mlp' encoder"
        )
    c, h, w = shape
    if not 1 <= c <= max_channels or h < min_size or w < min_size:
        raise ValueError(
            f"encoder {name!r} expects channels-first images with 1-{max_channels} channels and "
            f"H, W >= {min_size}, got {shape}; if the data is channels-last, permute it to (C, H, W)"
        )
    return c, h, w
