"""`rmserve label add | export | stats`: tasks into the label store, orderings out of it, and their agreement.

The store is the one the server uses (`RMSERVE_LABEL_DB`, or the SQLite file under `RMSERVE_DATA_DIR`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rmserve.arguments import input_file, positive_int
from rmserve.config import Settings
from rmserve.labels import argilla_records, label_studio_tasks
from rmserve.labels.agreement import agreement
from rmserve.labels.database import database_url
from rmserve.labels.interchange import read_imported, write_json
from rmserve.labels.store import LabelStore
from rmserve.labels.task_file import ranking_records, read_tasks, write_records
from rmserve.labels.task_import import import_tasks
from rmserve.usage import UsageError

JSONL, RANKINGS = "jsonl", "rankings"  # rmserve's own formats


def _store(args: argparse.Namespace) -> tuple[LabelStore, Settings]:
    try:
        settings = Settings.from_env(label_db=args.label_db, data_dir=args.data_dir)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return LabelStore(database_url(settings), settings.label_lease_s), settings


# Other tools' files: how an element is read, and how a task is written.
TOOLS = {
    "argilla": (argilla_records.from_record, argilla_records.to_record),
    "label-studio": (label_studio_tasks.from_task, label_studio_tasks.to_task),
}


def add(args: argparse.Namespace) -> int:
    store, settings = _store(args)
    wanted = args.orderings or settings.label_orderings
    if args.format == JSONL:
        new_tasks = read_tasks(args.file, wanted)
        added = store.add(new_tasks)
        print(f"{added} tasks added ({len(new_tasks) - added} were already in the store)")
        return 0
    parse, _ = TOOLS[args.format]
    imported = read_imported(args.file, parse, wanted)
    summary = import_tasks(store, imported)
    print(
        f"{summary.tasks} tasks added ({len(imported) - summary.tasks} were already in the store), "
        f"{summary.orderings} orderings and {summary.skips} skips ({summary.held} already held, "
        f"{summary.tied} rankings with ties left out)"
    )
    return 0


def export(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    if args.format == RANKINGS:
        answers = list(store.orderings())
        records = ranking_records(answers)
        write_records(args.file, records)
        skips = len(answers) - len(records)
        print(f"{len(records)} ranking records written to {args.file} ({skips} skips left out)")
        return 0
    _, write = TOOLS[args.format]
    stored = store.stored_tasks()
    # Label Studio would credit imported annotations to whoever imports them: it gets the tasks still to order.
    chosen = [task for task in stored if task.open] if args.format == "label-studio" else stored
    written = write_json(args.file, map(write, chosen))
    print(f"{written} tasks written to {args.file} for {args.format}")
    return 0


def stats(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    counts = store.counts()
    agreed = agreement(store.orderings())
    rows = [
        ("tasks queued", str(counts.queued)),
        ("tasks leased", str(counts.leased)),
        ("tasks done", str(counts.done)),
        ("orderings", str(counts.orderings)),
        ("skips", str(counts.skips)),
        ("tasks ordered twice or more", str(agreed.tasks)),
        ("labeller pairs compared", str(agreed.pairs)),
        ("Kendall's tau (mean)", "-" if agreed.kendall_tau is None else f"{agreed.kendall_tau:.3f}"),
        ("same best response", "-" if agreed.top1 is None else f"{agreed.top1:.1%}"),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `rmserve label` and its subcommands."""
    label = subparsers.add_parser(
        "label",
        help="the label store: add tasks for people to order at /label, export their orderings for training",
        description="Tasks (a prompt and 2-9 responses) wait in the label store for people to order at /label "
        "(RMSERVE_LABELLING=true); the finished orderings train the next model (`rmserve train`).",
    )
    actions = label.add_subparsers(dest="action", required=True, metavar="ACTION", help="add, export or stats")
    add_parser = actions.add_parser("add", help="add tasks from a JSONL file")
    add_parser.add_argument(
        "file",
        type=input_file,
        help='JSONL: {"prompt": str, "responses": [2 to 9 str]} per line; or an Argilla or Label Studio export',
    )
    add_parser.add_argument(
        "--format",
        choices=(JSONL, *TOOLS),
        default=JSONL,
        help="jsonl (tasks), or another tool's JSON export: its tasks and their orderings",
    )
    add_parser.add_argument(
        "--orderings", type=positive_int, help="independent orderings wanted per task (RMSERVE_LABEL_ORDERINGS)"
    )
    add_parser.set_defaults(handler=add)
    export_parser = actions.add_parser(
        "export", help="write the finished orderings as ranking records `rmserve train` reads"
    )
    export_parser.add_argument(
        "file", type=Path, help='output JSONL: {"prompt", "responses": [best, ..., worst]}, one per ordering'
    )
    export_parser.add_argument(
        "--format",
        choices=(RANKINGS, *TOOLS),
        default=RANKINGS,
        help="rankings (for rmserve train), argilla (every task as a record, with its Argilla users' responses) or "
        "label-studio (the tasks still to order, as Ranker tasks)",
    )
    export_parser.set_defaults(handler=export)
    stats_parser = actions.add_parser("stats", help="tasks by state, orderings, and agreement between labellers")
    stats_parser.set_defaults(handler=stats)
    for action in actions.choices.values():
        action.add_argument("--label-db", help="database URL (RMSERVE_LABEL_DB; default: DATA_DIR/labels.sqlite)")
        action.add_argument("--data-dir", type=Path, help="data directory (RMSERVE_DATA_DIR, default data)")
        # Unset unless given, so `rmserve label --debug add` keeps the --debug given before the action.
        action.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="on an error, show the full traceback"
        )
