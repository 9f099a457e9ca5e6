"""spreadcon.evaluate: pure measures on embeddings and models, no run folders.

Modules: embed (run a model over data; one split of a dataset through a Classifier), metrics
(accuracy, AUROC, per-group, worst-group and weighted average accuracy, per-group AUROC: the one
place for group metrics), probes (linear probe, coarse-to-fine transfer), geometry (the paper's
Figures 2/3 quantities, alignment and uniformity), floors (raw-pixel and random-init probes), plots
(the t-SNE / UMAP pictures). Evaluating a run folder is spreadcon.evaluation. Import the
submodule you need.
"""
