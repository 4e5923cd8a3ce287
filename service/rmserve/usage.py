"""A user's mistake on the command line: one sentence on stderr, exit status 2, no traceback.

Tracebacks are for bugs (anything not recognised here), or for everything with `--debug`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
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
    "psycopg": "postgres",
}


class UsageError(Exception):
    """Something the user can fix; the message says what is wrong and what to do."""


def install_hint(extra: str) -> str:
    return f"pip install -e '.[{extra}]' in a checkout, or pip install 'rmserve[{extra}]'"


def require_model(repository: Path, name: str | None, flag: str, named_by: str = "") -> None:
    """Raise a UsageError unless `repository` holds models, and the model `name` when one is asked for.

    `named_by` says where the name came from (`RMSERVE_MODELS`), for the message.
    """
    if not repository.is_dir():
        raise UsageError(
            f"no model repository at {repository.resolve()}: pass {flag} DIR (or set RMSERVE_MODEL_REPOSITORY)"
        )
    held = model_names(repository)
    if not held:
        raise UsageError(f"the model repository {repository} holds no models: export, import or quantize one into it")
    if name is not None and name not in held:
        where = f"{named_by}: " if named_by else ""
        raise UsageError(f"{where}no model {name!r} in {repository} (it holds: {', '.join(held)})")


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
    unreadable = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
    if isinstance(error, unreadable) and error.filename is not None:
        return f"{error.filename}: {error.strerror}"
    return None


class CommandParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line that points at --help, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR_STATUS, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """`parser.parse_args(argv)`, except that a flag the subcommand does not know points at the subcommand's help.

    (argparse leaves unknown flags to the top-level parser, whose message would name `rmserve --help`.)
    """
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


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
