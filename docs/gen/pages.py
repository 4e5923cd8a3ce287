"""Writes the generated pages into the site as it builds (mkdocs-gen-files runs this; mkdocs.yml).

Nothing here writes into the checkout: mkdocs_gen_files.open writes into the build's own copy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ and docs/gen/ are the checkout's, never installed

from bench.report import plot  # noqa: E402
from docs.gen import benchmarks_page, cli_page, metrics_page, models_page, openapi_page, reliability_page, settings_page  # noqa: E402


def write(page: str, text: str) -> None:
    with mkdocs_gen_files.open(page, "w") as file:
        file.write(text)


write("operations/settings.md", settings_page.render())
write("operations/metrics.md", metrics_page.render())
write("operations/cli.md", cli_page.render())
write("operations/reliability.md", reliability_page.render(ROOT / "docs" / "reliability.json"))
write("models.md", models_page.render(ROOT / "models"))

document = openapi_page.document()
write("api/openapi.md", openapi_page.render(document))
write(f"api/{openapi_page.DOWNLOAD}", openapi_page.as_json(document))

run, result = benchmarks_page.newest_run(ROOT / "bench" / "results")
with mkdocs_gen_files.open("benchmarks.md", "r") as page:  # the prose, docs/benchmarks.md
    prose = page.read()
write("benchmarks.md", benchmarks_page.render(prose, run, result))
with mkdocs_gen_files.open(benchmarks_page.PLOT, "wb") as image:
    plot(result, image)
