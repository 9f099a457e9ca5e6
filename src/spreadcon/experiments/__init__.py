"""Reproduce the paper: one small config module per table or figure, a runner, a table writer.

    spreadcon reproduce --list
    spreadcon reproduce fig4-transfer --scale small --seeds 3 --out results

    runner.py    Experiment, RunSpec (a row and its key), Context, run_experiment, the output files
    recipes.py   the shared training settings, `merge`, and what a run's key hashes
    common.py    training runs as RunSpecs: train or reuse, evaluate (`spreadcon.evaluation`), floors, the grid
    claims.py    verdicts that can fail: paired differences over seeds with a 95% interval
    charts.py    bars, lines and t-SNE pictures;  table.py: mean ± std tables
    paper.py     the paper's numbers;  registry.py: name -> Experiment;  index.py: OUT/README.md
    findings.py  one summary per results folder, from its rows;  readme.py: the README's generated sections
    fig*.py, table2.py, sweep.py, theory.py, demo.py: one experiment each

SCALES lives here, where importing it costs nothing (`spreadcon --help` lists it).
"""

SCALES = ("small", "medium", "full")  # embedded data on a CPU; real data, CPU hours; the paper's (a GPU)
