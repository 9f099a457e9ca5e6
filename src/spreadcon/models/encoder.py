"""Encoder = backbone + optional projection head `proj` (timm's forward_features / forward split).

    forward_features(x [B, *input_shape]) -> [B, feature_dim]   the backbone embedding
    forward(x)                            -> [B, embed_dim]     proj's output (identity if no proj)

The paper and its authors use no projection head: the contrastive loss and the cross-entropy
head both read the backbone embedding, so `proj` defaults to None and embed_dim == feature_dim.
(The cross-entropy head is `Classifier.head`, in spreadcon.models.classifier.)
Losses L2-normalise what they receive; the encoder returns unnormalised vectors.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Encoder(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, input_shape: tuple[int, ...], *,
                 proj: nn.Module | None = None, embed_dim: int | None = None, name: str = "",
                 options: dict[str, Any] | None = None) -> None:
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
