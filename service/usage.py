"""A user's mistake on the command line: one sentence on stderr, exit status 2, no traceback.

Tracebacks are for bugs (anything not recognised here), or for everything with `--debug`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rmserve.core.repository import InvalidModel
from rmserve.errors import ServiceError

USAGE_ERROR_STATUS = 2  # what argparse exits with on a bad flag, too

# Packages that only an extra brings, and that extra.
EXTRA_OF_PACKAGE = {
    "torch": "train",
    "transformers": "train",
    "onnx": "train",
    "sklearn": "train",
    "scipy": "train",
    "matplotlib": "train",
    "trl": "examples",
    "datasets": "examples",
}


class UsageError(Exception):
    """Something the user can fix; the message says what is wrong and what to do."""


def install_hint(extra: str) -> str:
    return f"pip install -e '.[{extra}]' in a checkout, or pip install 'rmserve[{extra}]'"


def missing_repository(repository: Path, flag: str) -> UsageError:
    return UsageError(f"no model repository at {repository.resolve()}: run from the project root, or pass {flag} DIR")


def explain(error: Exception) -> str | None:
    """The one-line message for a user error, or None for a bug."""
    if isinstance(error, UsageError | InvalidModel):
        return str(error)
    if isinstance(error, ServiceError):
        return f"{error.field}: {error.message}" if error.field else error.message
    if isinstance(error, ModuleNotFoundError) and error.name:
        extra = EXTRA_OF_PACKAGE.get(error.name.partition(".")[0])
        if extra is not None:
            return f"needs {error.name}, from the [{extra}] extra: {install_hint(extra)}"
    unreadable = FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError
    if isinstance(error, unreadable) and error.filename is not None:
        return f"{error.filename}: {error.strerror}"
    return None


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback (for a bug report)")


def run(args: argparse.Namespace) -> int:
    """Run the chosen command's handler; a user error becomes one line on stderr and status 2."""
    try:
        return int(args.handler(args) or 0)
    except Exception as error:
        message = explain(error)
        if message is None or getattr(args, "debug", False):
            raise
        print(f"rmserve {args.command}: {message}", file=sys.stderr)
        return USAGE_ERROR_STATUS
