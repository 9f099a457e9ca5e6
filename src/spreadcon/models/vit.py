"""The paper's small Vision Transformer (Section 5, Appendix E; the authors' `transformer` encoder).

4x4 patches -> linear patch embedding -> [CLS] + patches + learned positions -> 7 pre-norm
blocks (width 256, 8 heads, MLP 512, GELU, dropout 0.05, drop-path rising linearly from 0 to
0.05) -> final LayerNorm -> the CLS token, a [B, 256] embedding.

One named difference from a textbook ViT block, kept from the authors' code so the model has the
paper's "about 3.2M parameters": the attention has a bias-free fused QKV projection and NO output
projection (`attn_out_proj=False`). `attn_out_proj=True` adds the usual W_O (about 3.7M at the
default size). The authors' attention contracts the wrong index of the attention matrix (it
computes softmax(QK^T)^T V); we use standard attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spreadcon.models.encoder import image_shape


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability p (training only).

    Randomness comes from the global torch generator, like nn.Dropout; seed it with torch.manual_seed.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float, out_proj: bool) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width) if out_proj else nn.Identity()
        self.out_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        return self.out_drop(self.proj(y))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, width: int, heads: int, mlp_dim: int, *, dropout: float, drop_path: float,
                 attn_out_proj: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout, attn_out_proj)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(mlp_dim, width), nn.Dropout(dropout),
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """x [B, C, H, W] float -> CLS embedding [B, width]."""

    def __init__(self, image_size: tuple[int, int], in_chans: int, *, patch_size: int = 4, width: int = 256,
                 depth: int = 7, heads: int = 8, mlp_dim: int = 512, dropout: float = 0.05,
                 drop_path: float = 0.05, attn_out_proj: bool = False) -> None:
        super().__init__()
        h, w = image_size
        if h % patch_size or w % patch_size:
            raise ValueError(
                f"vit: patch_size {patch_size} does not divide the image size {h}x{w}; "
                f"choose a patch size that divides both (e.g. --set encoder_options.patch_size=...)"
            )
        if width % heads:
            raise ValueError(f"vit: width {width} is not a multiple of heads {heads}")
        self.feature_dim = width
        self.patch_embed = nn.Conv2d(in_chans, width, kernel_size=patch_size, stride=patch_size)
        n_tokens = (h // patch_size) * (w // patch_size) + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, width))
        self.pos_drop = nn.Dropout(dropout)
        rates = [k * drop_path / (depth - 1) if depth > 1 else 0.0 for k in range(depth)]
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_dim, dropout=dropout, drop_path=r, attn_out_proj=attn_out_proj)
                                      for r in rates])
        self.norm = nn.LayerNorm(width)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        fan_in = self.patch_embed.weight[0].numel()
        nn.init.trunc_normal_(self.patch_embed.weight, std=math.sqrt(1.0 / fan_in))
        nn.init.zeros_(self.patch_embed.bias)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, T-1, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, T, D)
        x = self.pos_drop(x + self.pos_embed)
        return self.norm(self.blocks(x))[:, 0]  # (B, D): the CLS token


def vit(input_shape: tuple[int, ...], **options) -> ViT:
    """The paper's ViT: 4x4 patches, 7 pre-norm layers, width 256, 8 heads, MLP 512 (~3.2M params)."""
    c, h, w = image_shape("vit", input_shape)
    return ViT((h, w), c, **options)


def vit_test(input_shape: tuple[int, ...], **options) -> ViT:
    """Test-size ViT: 2 layers, width 32, 2 heads, MLP 64."""
    small = dict(width=32, depth=2, heads=2, mlp_dim=64)
    return vit(input_shape, **{**small, **options})

