"""The reliability page: what each reliability test tried and measured, from docs/reliability.json."""

from __future__ import annotations

import json
from pathlib import Path

from docs.gen.tables import code, table

INTRO = """# Reliability: what was tried, what was measured

Each row is written by the test named in it, from its own measurements: the tests record into
`docs/reliability.json` when asked (`make reliability` runs the whole suite, slow tests included,
with `pytest --reliability-report docs/reliability.json`; a plain `make test` writes nothing), and
this page is generated from that file when the site is built. Do not edit either by hand; edit
the tests. "measured" is the date of the run that wrote the row.

"""


def render(results: Path) -> str:
    rows = json.loads(results.read_text(encoding="utf-8"))
    return INTRO + table(
        ("scenario", "what was tried", "measured outcome", "test", "measured"),
        (
            (scenario, row["tried"], row["outcome"], code(row["test"]), row["measured"])
            for scenario, row in sorted(rows.items())
        ),
    )
