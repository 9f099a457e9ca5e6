"""Reproduce the paper: one small config module per table or figure, a runner, a table writer.

    spreadcon reproduce --list
    spreadcon reproduce fig4-transfer --scale small --seeds 3 --out results

See `spreadcon.experiments.runner` for how runs are keyed, skipped and resumed, and
`spreadcon.experiments.paper` for the paper's numbers the tables are compared with.
"""
