"""The command-line page: `rmserve --help` and every subcommand's `--help`, as the parser prints them."""

from __future__ import annotations

import argparse
import functools

from rmserve.cli import build_parser

WIDTH = 100  # columns the help is wrapped to, whatever terminal builds the site

INTRO = """# Command line

`rmserve` is installed into the virtual environment `make serve` or `make test` creates: run it
as `.venv/bin/rmserve`, or activate the environment first (`source .venv/bin/activate`). Every
command prints the help below with `--help`. A mistake on the command line is one line on stderr
and exit status 2; `--debug` shows the full traceback instead.

This page is generated from the parser itself (`rmserve.cli.build_parser`), so it cannot drift.
`bench` exists only in a checkout (its harness, `bench/`, is not installed).

"""


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers, by name, in the order `--help` lists them; a command's own actions follow it
    (`label`, `label add`, ...)."""
    (subparsers,) = (action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    found: dict[str, argparse.ArgumentParser] = {}
    for name, command in subparsers.choices.items():
        found[name] = command
        if any(isinstance(action, argparse._SubParsersAction) for action in command._actions):
            found.update({f"{name} {action}": parser for action, parser in commands(command).items()})
    return found


def help_text(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = functools.partial(parser.formatter_class, width=WIDTH)  # type: ignore[call-arg]
    return parser.format_help().rstrip()


def render() -> str:
    parser = build_parser()
    sections = [f"## rmserve\n\n```text\n{help_text(parser)}\n```\n"]
    sections += [
        f"## rmserve {name}\n\n```text\n{help_text(command)}\n```\n" for name, command in commands(parser).items()
    ]
    return INTRO + "\n".join(sections)
