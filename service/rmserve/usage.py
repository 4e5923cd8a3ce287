"""A user's mistake on the command line: one sentence on stderr, exit status 2, no traceback.

Tracebacks are for bugs (anything not recognised here), or for everything with `--debug`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from rmserve.core.repository import InvalidModel, model_names
from rmserve.errors import ServiceError

USAGE_ERROR_STATUS = 2  # what argparse exits with on a bad flag, too
INTERRUPTED_STATUS = 130  # 128 + SIGINT, as shells report Ctrl-C

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


def require_model(repository: Path, name: str | None, flag: str) -> None:
    """Raise a UsageError unless `repository` exists (and holds the model `name`, when one is asked for)."""
    if not repository.is_dir():
        raise UsageError(
            f"no model repository at {repository.resolve()}: pass {flag} DIR (or set RMSERVE_MODEL_REPOSITORY)"
        )
    if name is not None and not (repository / name).is_dir():
        raise UsageError(
            f"no model {name!r} in {repository} (it holds: {', '.join(model_names(repository)) or 'none'})"
        )


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


class CommandParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line that points at --help, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR_STATUS, f"{self.prog}: {message} (see {self.prog} --help)\n")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback (for a bug report)")


def run(args: argparse.Namespace) -> int:
    """Run the chosen command's handler; a user error becomes one line on stderr and status 2."""
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        print(f"\nrmserve {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    except Exception as error:
        message = explain(error)
        if message is None or getattr(args, "debug", False):
            raise
        print(f"rmserve {args.command}: {message}", file=sys.stderr)
        return USAGE_ERROR_STATUS
