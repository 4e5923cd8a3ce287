"""The settings page: every field of `rmserve.config.Settings` with its variable, default and description."""

from __future__ import annotations

from dataclasses import fields

from docs.gen.tables import code, table
from rmserve.config import DESCRIPTION, PREFIX, Settings

INTRO = """# Settings

Every setting is an environment variable `RMSERVE_<NAME>`, read once at start-up into one frozen
object (`rmserve.config.Settings`); nothing else reads the environment. `rmserve serve` takes flags
for the common ones, which override the variables (see the [command line](cli.md)). A value out of
range stops start-up with one line naming the variable. Lists are comma-separated.

This table is generated from the code (`docs/gen/settings_page.py`), so it cannot drift from it.

"""


def default_text(value: object) -> str:
    """A default as the variable would spell it: lists comma-separated, booleans lower case."""
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return code(",".join(value)) if value else "empty"
    if isinstance(value, bool):
        return code(str(value).lower())
    return code(str(value))


def render() -> str:
    rows = [
        (code(field.name), code(PREFIX + field.name.upper()), default_text(field.default), field.metadata[DESCRIPTION])
        for field in fields(Settings)
    ]
    return INTRO + table(("setting", "variable", "default", "what it does"), rows)
