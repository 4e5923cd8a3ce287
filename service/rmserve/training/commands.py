"""`rmserve train | export | import | quantize | eval | ensemble`: the training half of the CLI.

`rmserve.cli` calls `register(subparsers)`. Nothing here imports torch at module level, so the
serving CLI stays light; each handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from rmserve.training import ensemble_build, eval_command, publish_commands, train_command
from rmserve.usage import CommandParser, add_debug_flag, parse_command_line, run


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the train, export, import, quantize, eval and ensemble subcommands to the `rmserve` parser."""
    # Checkpoints are local directories: transformers must never ask a model hub, and a failed command's
    # stderr is its one line, not weight-loading progress bars. Both are read when transformers is first imported.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    train_command.register(subparsers)
    publish_commands.register(subparsers)
    eval_command.register(subparsers)
    ensemble_build.register(subparsers)


def main(argv: list[str] | None = None) -> int:
    """Run train/export/eval without the serving CLI: `python -m rmserve.training.commands train ...`."""
    parser = CommandParser(prog="rmserve")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(commands)
    for command in commands.choices.values():
        add_debug_flag(command)
    return run(parse_command_line(parser, argv))


if __name__ == "__main__":
    sys.exit(main())
