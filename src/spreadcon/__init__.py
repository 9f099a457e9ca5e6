"""spreadcon: supervised contrastive learning that keeps what labels don't say.

Implements "The Details Matter: Preventing Class Collapse in Supervised Contrastive Learning"
(Chen, Zhang, Fu, Sala, Ré): L_spread = alpha * L_attract + (1 - alpha) * L_repel, its
baselines, encoders, a trainer, evaluation, and the paper's applications.
"""

__version__ = "0.1.0"
