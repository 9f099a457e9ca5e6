"""spreadcon.evaluate: embeddings, metrics, linear probes, geometry, pictures and stamps.

Modules: embed (run a model over data), metrics (accuracy, AUROC, per-group, worst-group and
weighted average accuracy, per-group AUROC: the one place for group metrics), probes (linear
probe, coarse-to-fine transfer), geometry (the paper's Figures 2/3 quantities, alignment and
uniformity), plots (the t-SNE / UMAP pictures), stamp (which checkpoint a derived output came
from, and whether it is stale). Import the submodule you need.
"""
