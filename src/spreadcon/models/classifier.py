"""Classifier = Encoder + a linear cross-entropy head (timm's forward_features / forward_head split).

    forward_features(x [B, *input_shape]) -> embedding [B, D]  unnormalised; what the loss sees
    forward_head(embedding [B, D])        -> logits [B, K]     the cross-entropy head
    forward(x)                            -> (embedding [B, D], logits [B, K])

Unlike timm, `forward` returns both: the trainer's two objectives (the contrastive loss on the
normalised embedding, cross-entropy on the logits, Section 5 of the paper) read one forward pass.
The projection head, when there is one, is `encoder.proj`; the cross-entropy head is `head`.
"""

from __future__ import annotations

from torch import Tensor, nn


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.embed_dim, num_classes)

    @property
    def embed_dim(self) -> int:
        return int(self.encoder.embed_dim)

    @property
    def num_classes(self) -> int:
        return int(self.head.out_features)

    def forward_features(self, x: Tensor) -> Tensor:
        """x [B, *input_shape] -> embedding [B, D] (the encoder's output, proj included)."""
        return self.encoder(x)

    def forward_head(self, embedding: Tensor) -> Tensor:
        """embedding [B, D] -> logits [B, K]."""
        return self.head(embedding)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.forward_features(x)
        return z, self.forward_head(z)
