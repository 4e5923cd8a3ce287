"""`rmserve`: serve, score, bench here; train, export and eval come from `rmserve.training.cli` (torch, lazily)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from rmserve.config import Settings
from rmserve.training.cli import register as register_training

GUNICORN_CONFIG = Path("deploy/gunicorn.conf.py")
# The source tree, when rmserve is installed from a checkout (`pip install -e .`, as `make` does).
CHECKOUT = Path(__file__).resolve().parents[1]


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that override `RMSERVE_*` settings (default: the environment, then built-in defaults)."""
    group = parser.add_argument_group("settings (each overrides its RMSERVE_* variable)")
    group.add_argument("--host", help="bind address (RMSERVE_HOST, default 0.0.0.0)")
    group.add_argument("--port", type=int, help="port (RMSERVE_PORT, default 8000)")
    group.add_argument(
        "--model-repository", type=Path, help="model repository (RMSERVE_MODEL_REPOSITORY, default models/repository)"
    )
    group.add_argument("--models", help="comma-separated model names to load (RMSERVE_MODELS, default all)")
    group.add_argument("--default-model", help="model used when a request names none (RMSERVE_DEFAULT_MODEL)")
    group.add_argument("--workers", type=int, help="gunicorn worker processes (RMSERVE_WORKERS, default 1)")
    group.add_argument("--threads", type=int, help="request threads per worker (RMSERVE_THREADS, default 16)")
    group.add_argument(
        "--max-batch-tokens", type=int, help="padded tokens per inference call (RMSERVE_MAX_BATCH_TOKENS)"
    )
    group.add_argument("--max-queue-tokens", type=int, help="tokens queued before 429 (RMSERVE_MAX_QUEUE_TOKENS)")
    group.add_argument("--log-level", help="debug, info, warning, error (RMSERVE_LOG_LEVEL, default info)")


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name, None)
        for name in (
            "host",
            "port",
            "model_repository",
            "default_model",
            "workers",
            "threads",
            "max_batch_tokens",
            "max_queue_tokens",
            "log_level",
        )
    }
    if getattr(args, "models", None):
        overrides["models"] = tuple(name.strip() for name in args.models.split(",") if name.strip())
    return Settings.from_env(**overrides)


def serve(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn (so it receives SIGTERM directly and drains)."""
    settings = settings_from(args)
    config = args.gunicorn_config
    if not config.is_file():
        print(
            f"rmserve serve: gunicorn config {config} not found (run from the project root, or pass --gunicorn-config)",
            file=sys.stderr,
        )
        return 2
    if not settings.model_repository.is_dir():
        print(f"rmserve serve: model repository {settings.model_repository} does not exist", file=sys.stderr)
        return 2
    os.environ.update(settings.as_environ())
    argv = [sys.executable, "-m", "gunicorn", "--config", str(config)]
    os.execv(sys.executable, argv)
    return 0  # not reached


def score(args: argparse.Namespace) -> int:
    from rmserve.offline import score_file

    settings = settings_from(args)
    return score_file(settings, args.input, args.output, args.model, args.chunk_size)


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
    parser = argparse.ArgumentParser(
        prog="rmserve",
        description="Train reward models from human rankings, export them to ONNX, and serve them to RL trainers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_parser = commands.add_parser("serve", help="serve the model repository over HTTP (gunicorn)")
    add_settings_flags(serve_parser)
    serve_parser.add_argument(
        "--gunicorn-config",
        type=Path,
        default=GUNICORN_CONFIG,
        help=f"gunicorn config file (default {GUNICORN_CONFIG})",
    )
    serve_parser.set_defaults(handler=serve)

    score_parser = commands.add_parser(
        "score", help="score a JSONL file offline through the same tokenizer, batcher and model as the server"
    )
    score_parser.add_argument("input", type=Path, help='JSONL: {"prompt","response"} or {"messages"} per line')
    score_parser.add_argument("-o", "--output", type=Path, help="output JSONL (default: stdout)")
    score_parser.add_argument("--model", help="model name (default: the default model)")
    score_parser.add_argument("--chunk-size", type=int, default=256, help="lines queued at a time (default 256)")
    add_settings_flags(score_parser)
    score_parser.set_defaults(handler=score)

    harness = _bench_harness()
    if harness is not None:
        bench_parser = commands.add_parser(
            "bench",
            help="batching policies and the HTTP server side by side; the tables in BENCHMARKS.md",
            description=harness.__doc__,
        )
        harness.add_arguments(bench_parser)
        bench_parser.set_defaults(handler=harness.run)

    register_training(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
