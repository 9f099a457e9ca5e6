"""spreadcon.apps: the paper's methods on embeddings, each a scikit-learn estimator, plus one
`apply_to_run` per method that applies it to a run folder (`spreadcon apply NAME RUN_DIR`).

    strata          StrataRecovery (GEORGE: per-class UMAP + silhouette-selected clustering,
                    overclustering), recovery_scores
    gdro            GroupDRO (linear-frozen end model; the objective is spreadcon.group_dro)
    robustness      recovery + ERM / Group DRO end models on a run (Section 5.2)
    noisy           NoisyLabelCorrection (trainer callback), NoisyLabelCorrector (Section 5.2)
    coreset         strata_coreset and baselines, CoresetSelector (Section 5.3)
    coreset_scores  forgetting, EL2N, GraNd
    checks          the input checks of every fit / transform / predict above (shapes, ids, finite)

The experiments around them (Figure 5) live in spreadcon.experiments (`spreadcon reproduce`).
"""
