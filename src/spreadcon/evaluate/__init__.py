"""spreadcon.evaluate: embeddings, metrics, linear probes, geometry and pictures.

Modules: embed (run a model over data), metrics (accuracy, AUROC, worst-group), probes (linear
probe, coarse-to-fine transfer), geometry (the paper's Figures 2/3 quantities, alignment and
uniformity), plots (t-SNE / UMAP pictures). Import the submodule you need.
"""
