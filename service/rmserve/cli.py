"""`rmserve`: serve, score, bench here; train, export and eval come from `rmserve.training.commands` (torch, lazily)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from rmserve.arguments import input_file, model_name, positive_int, server_url
from rmserve.config import DEFAULT_BATCH_TOKENS, Settings
from rmserve.labels.commands import register as register_labels
from rmserve.training.commands import register as register_training
from rmserve.usage import CommandParser, UsageError, add_debug_flag, parse_command_line, require_model, run

# The gunicorn config ships inside the package, so `rmserve serve` runs from any directory.
GUNICORN_CONFIG = "python:rmserve.gunicorn_conf"
# The source tree, when rmserve is installed from a checkout (`pip install -e .`, as `make` does).
CHECKOUT = Path(__file__).resolve().parents[2]


# Every flag that overrides a setting, written once: (flag, type, help). `serve` takes them all,
# `score` only those that matter offline.
SETTINGS_FLAGS: dict[str, tuple[str, type, str]] = {
    "host": ("--host", str, "bind address (RMSERVE_HOST, default 0.0.0.0)"),
    "port": ("--port", int, "port (RMSERVE_PORT, default 8000)"),
    "model_repository": (
        "--model-repository",
        Path,
        "model repository directory (RMSERVE_MODEL_REPOSITORY, default models)",
    ),
    "models": ("--models", str, "comma-separated model names to load (RMSERVE_MODELS, default all)"),
    "default_model": ("--default-model", str, "model used when a request names none (RMSERVE_DEFAULT_MODEL)"),
    "workers": ("--workers", int, "gunicorn worker processes (RMSERVE_WORKERS, default 1)"),
    "threads": ("--threads", int, "scoring requests in progress per worker (RMSERVE_THREADS, default 128)"),
    "max_batch_tokens": (
        "--max-batch-tokens",
        int,
        "padded tokens per inference run, all models (RMSERVE_MAX_BATCH_TOKENS; default 0: each model's own, "
        f"else {DEFAULT_BATCH_TOKENS})",
    ),
    "max_queue_tokens": ("--max-queue-tokens", int, "tokens queued before 429 (RMSERVE_MAX_QUEUE_TOKENS)"),
    "log_level": ("--log-level", str, "debug, info, warning, error (RMSERVE_LOG_LEVEL, default info)"),
    "access_log": (
        "--access-log",
        str,
        "access-log lines for all requests, errors (status >= 400) or off (RMSERVE_ACCESS_LOG, default errors)",
    ),
}
SCORE_SETTINGS = ("model_repository", "max_batch_tokens")
REVIEW_RETRIES = 1
REVIEW_TIMEOUT_S = 10.0


def add_settings_flags(parser: argparse.ArgumentParser, names: Sequence[str] = tuple(SETTINGS_FLAGS)) -> None:
    """Flags that override `RMSERVE_*` settings (default: the environment, then built-in defaults)."""
    group = parser.add_argument_group("settings (each overrides its RMSERVE_* variable)")
    for name in names:
        flag, kind, help_text = SETTINGS_FLAGS[name]
        group.add_argument(flag, dest=name, type=kind, help=help_text)


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name, None) for name in SETTINGS_FLAGS if name != "models"}
    if getattr(args, "models", None):
        overrides["models"] = tuple(name.strip() for name in args.models.split(",") if name.strip())
    try:
        return Settings.from_env(**overrides)
    except ValueError as error:  # a setting out of range, from a flag or the environment
        raise UsageError(str(error)) from None


def serve(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn (so it receives SIGTERM directly and drains)."""
    settings = settings_from(args)
    config = GUNICORN_CONFIG
    if args.gunicorn_config is not None:
        if not args.gunicorn_config.is_file():
            raise UsageError(f"--gunicorn-config: no file at {args.gunicorn_config.resolve()}")
        config = str(args.gunicorn_config)
    # Checked here, so a model name that is not there is one line, not a worker's traceback in gunicorn's log.
    require_model(settings.model_repository, None, "--model-repository")
    named = [(name, "--models/RMSERVE_MODELS") for name in settings.models]
    if settings.default_model is not None:
        named.append((settings.default_model, "--default-model/RMSERVE_DEFAULT_MODEL"))
    for name, named_by in named:
        require_model(settings.model_repository, name, "--model-repository", named_by)
    try:
        settings.all_api_keys()  # the master reads them again; a keys file to fix is one line here, not a traceback
    except ValueError as error:
        raise UsageError(str(error)) from None
    os.environ.update(settings.as_environ())
    argv = [sys.executable, "-m", "gunicorn", "--config", str(config)]
    os.execv(sys.executable, argv)
    return 0  # not reached


def score(args: argparse.Namespace) -> int:
    from rmserve.offline import read_items, score_file

    settings = settings_from(args)
    require_model(settings.model_repository, args.model, "--model-repository")
    for _ in read_items(args.input):  # a bad line stops here, before any model loads or any output is written
        pass
    if args.model:  # load only the model asked for
        settings = settings.replace(models=(args.model,))
    return score_file(settings, args.input, args.output, args.model, args.chunk_size)


def review(args: argparse.Namespace) -> int:
    """Write the server's review buffer as ranking records, one JSON object per line."""
    import json

    from rmserve.client import RewardClient, RewardServerError

    try:
        # A person at a terminal: two quick tries, not a trainer's patient budget.
        with RewardClient(args.url, api_key=args.api_key, timeout=REVIEW_TIMEOUT_S, retries=REVIEW_RETRIES) as client:
            records = client.review(args.model)
    except RewardServerError as error:
        if error.status is None:  # nothing answered (refused, unknown host, timed out): --debug has the details
            raise UsageError(
                f"no answer from {args.url} in {error.attempts} tries: is the server running there?"
            ) from None
        raise UsageError(str(error)) from None
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    print(f"{len(records)} ranking records for review", file=sys.stderr)
    return 0


def _bench_harness() -> ModuleType | None:
    """The checkout's benchmark harness (`bench/`, never installed), or None outside a checkout."""
    package = CHECKOUT / "bench" / "__init__.py"
    if not (CHECKOUT / "pyproject.toml").is_file() or not package.is_file():
        return None
    if "bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "bench", package, submodule_search_locations=[str(package.parent)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench"] = module
        spec.loader.exec_module(module)
    return importlib.import_module("bench.harness")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="rmserve",
        description="Train reward models from human rankings, export them to ONNX, and serve them to RL trainers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_parser = commands.add_parser("serve", help="serve the model repository over HTTP (gunicorn)")
    add_settings_flags(serve_parser)
    serve_parser.add_argument(
        "--gunicorn-config",
        type=Path,
        help="a gunicorn config file of your own (default: the one that ships in the package, rmserve.gunicorn_conf)",
    )
    serve_parser.set_defaults(handler=serve)

    score_parser = commands.add_parser(
        "score", help="score a JSONL file offline through the same tokenizer, batcher and model as the server"
    )
    score_parser.add_argument("input", type=input_file, help='JSONL: {"prompt","response"} or {"messages"} per line')
    score_parser.add_argument("-o", "--output", type=Path, help="output JSONL (default: stdout)")
    score_parser.add_argument("--model", type=model_name, help="model name (default: the default model)")
    score_parser.add_argument(
        "--chunk-size", type=positive_int, default=256, help="lines queued at a time (default 256)"
    )
    add_settings_flags(score_parser, SCORE_SETTINGS)
    score_parser.set_defaults(handler=score)

    review_parser = commands.add_parser(
        "review",
        help="export a server's review buffer (RMSERVE_REVIEW_PROMPTS) as ranking records for people to order",
        description="Fetches GET /v1/models/<name>/review and writes one ranking record per line: "
        '{"prompt", "responses" (in the model\'s order, best first), "model_scores", "flags"}. '
        "Put each record's responses in the order people prefer (best first), then `rmserve train` reads the file.",
    )
    review_parser.add_argument("url", type=server_url, help="the server, e.g. http://rm:8000")
    review_parser.add_argument("--model", type=model_name, help="model name (default: the server's default model)")
    review_parser.add_argument("-o", "--output", type=Path, help="output JSONL (default: stdout)")
    review_parser.add_argument("--api-key", help="API key, when the server asks for one")
    review_parser.set_defaults(handler=review)

    harness = _bench_harness()
    if harness is not None:
        bench_parser = commands.add_parser(
            "bench",
            help="batching policies and the HTTP server side by side (the docs' benchmarks page)",
            description=harness.__doc__,
        )
        harness.add_arguments(bench_parser)
        bench_parser.set_defaults(handler=harness.run)

    register_training(commands)
    register_labels(commands)
    for command in commands.choices.values():
        add_debug_flag(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(parse_command_line(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
