"""Classifier = Encoder + a linear cross-entropy head (timm's forward_features / forward_head split).

    forward_features(x [B, *input_shape]) -> embedding [B, D]  unnormalised; what the loss sees
    forward_head(embedding [B, D])        -> logits [B, K]     the cross-entropy head
    forward(x)                            -> (embedding [B, D], logits [B, K])

Unlike timm, `forward` returns both: the trainer's two objectives (the contrastive loss on the
normalised embedding, cross-entropy on the logits, Section 5 of the paper) read one forward pass.
The projection head, when there is one, is `encoder.proj`; the cross-entropy head is `head`. It
reads z (`head_input="z"`, the paper's protocol: loss and CE on one output) or the backbone
output h before the projection (`head_input="h"`, the standard protocol since SimCLR/SupCon).
"""

from __future__ import annotations

from torch import Tensor, nn


HEAD_INPUTS = ("z", "h")


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int, *, head_input: str = "z") -> None:
        super().__init__()
        if head_input not in HEAD_INPUTS:
            raise ValueError(f"head_input must be one of {HEAD_INPUTS}, got {head_input!r}")
        self.encoder = encoder
        self.head_input = head_input
        self.head = nn.Linear(encoder.feature_dim if head_input == "h" else encoder.embed_dim, num_classes)

    @property
    def embed_dim(self) -> int:
        return int(self.encoder.embed_dim)

    @property
    def has_projection(self) -> bool:
        """True when the encoder has a projection head (encoder.proj is not Identity)."""
        return bool(self.encoder.has_projection)

    @property
    def num_classes(self) -> int:
        return int(self.head.out_features)

    def forward_features(self, x: Tensor) -> Tensor:
        """x [B, *input_shape] -> embedding [B, D] (the encoder's output, proj included)."""
        return self.encoder(x)

    def forward_head(self, embedding: Tensor) -> Tensor:
        """embedding [B, D] (z, or h [B, F] with head_input "h") -> logits [B, K]."""
        return self.head(embedding)

    def forward_all(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x -> (z [B, D], logits [B, K], h [B, F]); h is z without a projection head."""
        h = self.encoder.forward_features(x)
        z = self.encoder.proj(h)
        return z, self.forward_head(h if self.head_input == "h" else z), h

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, logits, _ = self.forward_all(x)
        return z, logits
