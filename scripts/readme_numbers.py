"""Rewrite README.md's generated sections (the demo's table, the results summary) from results/.

    python scripts/readme_numbers.py            # rewrite them
    python scripts/readme_numbers.py --check    # exit 1 when README.md differs from what results/ give

Every number between README.md's `<!-- demo:begin/end -->` and `<!-- results:begin/end -->`
markers comes from a results.json (spreadcon.experiments.readme; tests/test_readme.py checks it).
"""

from __future__ import annotations

import sys

from spreadcon.experiments.readme import main

if __name__ == "__main__":
    sys.exit(main())
