"""README.md's generated sections: the demo's table and the results summary, from results/.

    python scripts/readme_numbers.py            # rewrite them in README.md
    python scripts/readme_numbers.py --check    # exit 1 when README.md differs (tests/test_readme.py)

README.md marks each section with a pair of comments, `<!-- demo:begin -->` ... `<!-- demo:end -->`
and `<!-- results:begin -->` ... `<!-- results:end -->`; the text between a pair is replaced by
`sections(results_dir)[name]`. The demo section is `spreadcon.experiments.demo.summary` of
results/demo/results.json (written by `spreadcon reproduce demo`); the results summary is one
bullet per results folder (`spreadcon.experiments.findings`). Nothing between the markers is typed:
change the prose in those modules, and the numbers by regenerating a result.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from spreadcon.experiments import demo
from spreadcon.experiments.findings import FINDINGS, link
from spreadcon.io import read_json, save_text

ROOT = Path(__file__).resolve().parents[3]  # the checkout: README.md and results/
NAMES = ("demo", "results")
# The results summary: headings, each with the folders whose bullets follow it.
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("The paper's central claim: coarse-to-fine transfer", ("fig4-transfer", "fig4-transfer-medium")),
    ("Geometry of the embeddings", ("fig2", "fig3")),
    ("End-model accuracy", ("fig4-end-model", "table2-attract")),
    ("Applications", ("fig5-robustness", "fig5-noise", "fig7-noise-grid", "fig5-coreset", "fig6-sample-complexity")),
    ("Hyperparameters and theory", ("sweep", "demo-alpha", "theory")),
    ("Defaults that work on your data", ("defaults", "defaults-npz", "defaults-medium")),
]
INTRO = ("Generated from `results/*/results.json` by `python scripts/readme_numbers.py` (tests/test_readme.py "
         "fails when this text and the results disagree). Mean ± std over seeds; a comparison is the paired "
         "difference over seeds (same seed: same split and initialisation) with its 95% interval: one side is "
         "\"higher\" only when the interval excludes zero, otherwise the two are \"not distinguishable\" (always "
         "so with one seed). Absolute numbers sit far below the paper's (small CNNs for a few epochs on 2 CPU "
         "cores, against its ViT for 600 epochs): compare the ordering of the losses, not the values. A results "
         "folder written before the paper protocol existed holds the projection protocol only.")


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """{folder: its parsed results.json} for every readable, non-smoke folder under results_dir."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(results_dir).glob("*/results.json")):
        try:
            data = read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and not data.get("smoke") and not path.parent.name.endswith("-smoke"):
            out[path.parent.name] = data
    return out


def demo_section(results: dict[str, dict[str, Any]]) -> str:
    """The demo's tables and findings from results/demo, or how to make them."""
    if "demo" not in results:
        return ("What the demo measured: not yet regenerated: run `spreadcon reproduce demo` (it writes "
                "results/demo, which this section is generated from; `spreadcon demo --out DIR` writes the same "
                "tables into DIR/table.md).\n")
    return (f"What the demo measured ({link('demo')}, written by `spreadcon reproduce demo`; the paper's "
            "numbers are its ViT at 600 epochs, ours small CNNs at 30-60, with the recipes chosen on the validation "
            "split in [docs/recipes.md](docs/recipes.md)):\n\n" + demo.summary(results["demo"]["rows"]))


def results_section(results: dict[str, dict[str, Any]]) -> str:
    """The results summary: per group, one bullet per folder (or how to make a missing one)."""
    lines = [INTRO]
    for title, folders in GROUPS:
        lines += ["", f"**{title}**", ""]
        for folder in folders:
            if folder in results:
                lines.append(FINDINGS[folder](results[folder]))
            else:
                lines.append(f"- results/{folder}: not run yet (`spreadcon reproduce` writes it; see "
                             "`spreadcon reproduce --list`).")
    known = {f for _, folders in GROUPS for f in folders} | {"demo"}
    others = [f for f in results if f not in known]
    if others:
        lines += ["", "Other results folders: " + ", ".join(f"[{f}](results/{f}/table.md)" for f in others) + "."]
    return "\n".join(lines) + "\n"


BLOCK_START = re.compile(r"^\s*([-+*] |\d+[.)] |#|>)")  # what would start a new markdown block


def wrap_line(line: str, width: int) -> str:
    """One paragraph or bullet wrapped at `width` or a little less: no continuation line may start
    like a markdown block (a wrapped "L_spread - L_SC" must not become a bullet)."""
    bullet = re.match(r"^(\s*)(- )?", line)
    indent = bullet.group(1) + ("  " if bullet.group(2) else "")
    for w in range(width, width - 30, -1):
        lines = textwrap.wrap(line, w, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
        if not any(BLOCK_START.match(x) for x in lines[1:]):
            return "\n".join(lines)
    return line


def wrap(text: str, width: int = 100) -> str:
    """Markdown wrapped at `width`: paragraphs and (nested) bullets; tables and headings kept whole."""
    return "\n".join(line if line.startswith(("|", "#")) or len(line) <= width else wrap_line(line, width)
                     for line in text.split("\n"))


def sections(results_dir: Path = ROOT / "results") -> dict[str, str]:
    """{marker name: the text between its markers}, generated from results_dir (wrapped at 100)."""
    results = load_results(results_dir)
    return {"demo": wrap(demo_section(results)), "results": wrap(results_section(results))}


def replace_sections(text: str, new: dict[str, str]) -> str:
    """`text` with the content between each `<!-- name:begin -->` / `<!-- name:end -->` pair replaced."""
    for name, body in new.items():
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
        if len(pattern.findall(text)) != 1:
            raise ValueError(f"README.md needs exactly one <!-- {name}:begin --> ... <!-- {name}:end --> pair")
        text = pattern.sub(lambda m: m.group(1) + body + m.group(2), text)
    return text


def regenerate(readme: Path = ROOT / "README.md", results_dir: Path = ROOT / "results") -> str:
    """README.md's text with its generated sections rebuilt from results_dir (nothing written)."""
    return replace_sections(readme.read_text(encoding="utf-8"), sections(results_dir))


def main(argv: list[str] | None = None) -> int:
    """Rewrite README.md's generated sections; with --check, only say whether it is up to date."""
    args = sys.argv[1:] if argv is None else argv
    readme = ROOT / "README.md"
    new = regenerate(readme)
    if "--check" in args:
        stale = new != readme.read_text(encoding="utf-8")
        print("README.md is stale: run python scripts/readme_numbers.py" if stale else "README.md is up to date")
        return int(stale)
    save_text(new, readme)
    print(f"wrote {readme}")
    return 0
