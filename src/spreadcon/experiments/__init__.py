"""Reproduce the paper: one small config module per table or figure, a runner, a table writer.

    spreadcon reproduce --list
    spreadcon reproduce fig4-transfer --scale small --seeds 3 --out results

See `spreadcon.experiments.runner` for how runs are keyed and obtained (`spreadcon.runs.train_or_reuse`),
`spreadcon.evaluate.run` for the one evaluation and its metric names, and
`spreadcon.experiments.paper` for the paper's numbers the tables are compared with.
"""
