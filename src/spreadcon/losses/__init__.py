"""The paper's contrastive losses: L_SC, L_SS, L_attract, L_repel and L_spread (SPEC.md).

    functional   the losses as functions (`spread_loss`, `supcon_loss`, ..., `*_loss_flat`,
                 `per_anchor_losses`), on one masked InfoNCE core (`core.RowStats`)
    modules      the same as nn.Modules (`SpreadLoss`, `SupConLoss`, ...) and the `LOSSES` registry;
                 they take SupContrast's, lightly's and pytorch-metric-learning's calls
    authors      the authors' released variants (supcon-authors, spread-authors)
    debiased     Appendix F.3.1's noise-aware losses (experimental)
    memory_bank  `MemoryBank`: detached past rows as extra contrast points
    kernels      the fused Triton kernel of the row statistics (optional, CUDA)

Example:
    >>> z = torch.randn(128, 2, 64, requires_grad=True)   # 128 images, 2 views
    >>> y = torch.randint(0, 10, (128,))
    >>> loss = spread_loss(z, y, alpha=0.5, temperature=0.5)
    >>> loss.backward()
"""

from spreadcon.losses.functional import (TERMS, attract_loss, attract_loss_flat, per_anchor_losses, repel_loss,
                                         repel_loss_flat, simclr_loss, simclr_loss_flat, spread_loss,
                                         spread_loss_flat, supcon_loss, supcon_loss_flat)
from spreadcon.losses.memory_bank import MemoryBank
from spreadcon.losses.modules import (LOSSES, AttractLoss, RepelLoss, SimCLRLoss, SpreadAuthorsLoss, SpreadLoss,
                                      SupConAuthorsLoss, SupConLoss)

__all__ = [
    "LOSSES", "TERMS", "AttractLoss", "MemoryBank", "RepelLoss", "SimCLRLoss", "SpreadAuthorsLoss", "SpreadLoss",
    "SupConAuthorsLoss", "SupConLoss", "attract_loss", "attract_loss_flat", "per_anchor_losses", "repel_loss",
    "repel_loss_flat", "simclr_loss", "simclr_loss_flat", "spread_loss", "spread_loss_flat", "supcon_loss",
    "supcon_loss_flat",
]
