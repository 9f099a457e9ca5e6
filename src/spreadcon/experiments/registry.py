"""The experiments `spreadcon reproduce` knows: a plain dict, name -> Experiment.

Each config module (fig2.py, fig4.py, ...) defines `EXPERIMENTS`, a list of `Experiment`s; its
docstring gives the command and the expected result. Importing them is cheap (no torch).
"""

from __future__ import annotations

import importlib

from spreadcon.experiments.runner import Experiment

MODULES = ("fig2", "fig3", "fig4", "fig5_robustness", "fig5_noise", "fig5_coreset", "table2", "fig6",
           "fig7", "sweep", "theory", "demo", "defaults")


def experiments() -> dict[str, Experiment]:
    """{name: Experiment}, in the paper's order."""
    out: dict[str, Experiment] = {}
    for module in MODULES:
        for exp in importlib.import_module(f"spreadcon.experiments.{module}").EXPERIMENTS:
            if exp.name in out:
                raise ValueError(f"two experiments are named {exp.name!r}")
            out[exp.name] = exp
    return out


def get(name: str) -> Experiment:
    known = experiments()
    if name not in known:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(known)} (see `spreadcon reproduce --list`)")
    return known[name]
