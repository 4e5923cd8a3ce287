"""The one frozen settings object. Only this module reads the environment (`RMSERVE_*`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

PREFIX = "RMSERVE_"
# Request threads per worker beyond RMSERVE_THREADS, never used for scoring: /healthz, /readyz and
# /metrics answer on them while every scoring thread waits on a saturated model.
PROBE_THREADS = 2
DEFAULT_REPOSITORY = Path("models")  # relative to the working directory
ACCESS_LOG_CHOICES = ("all", "errors", "off")
LOG_LEVEL_CHOICES = ("debug", "info", "warning", "error", "critical")
MAX_PORT = 65535
DESCRIPTION = "description"  # each field's metadata key
# What runs the graphs (RMSERVE_RUNTIME): ONNX Runtime's CPU provider, or OpenVINO's CPU plugin in bf16.
ONNXRUNTIME = "onnxruntime"
OPENVINO_BF16 = "openvino-bf16"
RUNTIMES = (ONNXRUNTIME, OPENVINO_BF16)
# The padded-token budget of a run for a model whose manifest measures none: the tiny default's cost per row is flat
# over runs of 1-16 rows, and two runs of this size in flight kept its server under 400 MB (benchmarks page).
DEFAULT_BATCH_TOKENS = 1024
URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")  # postgresql://user:PASSWORD@host/db


def setting(default: Any, description: str) -> Any:
    """A settings field with its description, which the docs' settings page shows."""
    return dataclasses.field(default=default, metadata={DESCRIPTION: description})


@dataclass(frozen=True)
class Settings:
    """Every knob of the server; each field is `RMSERVE_<NAME>` in the environment."""

    host: str = setting("0.0.0.0", "Address to bind.")
    port: int = setting(8000, "Port to listen on.")
    model_repository: Path = setting(DEFAULT_REPOSITORY, "The model repository, relative to the working directory.")
    models: tuple[str, ...] = setting(
        (), "Model names to load, comma-separated; empty loads every one in the repository."
    )
    default_model: str | None = setting(None, "The model for requests that name none; unset: the first loaded.")
    pinned_versions: tuple[str, ...] = setting(
        (), "Version pins `name=version`, comma-separated; an unpinned model serves its highest version."
    )
    api_keys: tuple[str, ...] = setting(
        (), "Bearer keys, comma-separated; with none here and no keys file, there is no authentication."
    )
    api_keys_file: Path | None = setting(
        None,
        "A file of keys, one per line or comma-separated, `#` comments; merged with `api_keys`. Read once at start "
        "for all workers, and again on SIGHUP to the master (a file that cannot be read then keeps the keys in use).",
    )
    protect_metrics: bool = setting(False, "`/metrics` needs a key too (when keys are configured).")
    workers: int = setting(1, "gunicorn worker processes, each with its own copy of the models.")
    threads: int = setting(128, "Scoring requests in progress per worker (their threads mostly wait on the batcher).")
    executors: int = setting(
        0, "Inference runs in flight per model and worker; 0: usable CPUs / workers / inference threads."
    )
    inference_threads: int = setting(
        0, "Threads per run (ONNX Runtime's intra-op, OpenVINO's per stream); 0: usable CPUs / workers / executors."
    )
    max_batch_tokens: int = setting(
        0,
        "Padded-token budget of one inference run, for every model; bounds memory with a run in flight per CPU. "
        f"0: each model's own (its manifest's `serving.max_batch_tokens`), else {DEFAULT_BATCH_TOKENS}.",
    )
    runtime: str = setting(
        ONNXRUNTIME,
        f"What runs the graphs: `{ONNXRUNTIME}` (its CPU provider; fp32, or a graph's own int8), or `{OPENVINO_BF16}` "
        "(OpenVINO's CPU plugin in bf16, for fp32 graphs on a CPU with AMX: 3.5x ONNX Runtime's fp32 on MiniLM, "
        "ranking as fp32 does; needs the `openvino` extra, `pip install 'rmserve[openvino]'`).",
    )
    max_batch_size: int = setting(64, "Rows per inference run; bounds the memory one run needs (1 turns batching off).")
    max_padding_ratio: float = setting(
        1.25, "How far a sub-batch's padded tokens may exceed its real tokens, as a factor."
    )
    max_queue_tokens: int = setting(262144, "Tokens waiting per model before requests get 429.")
    max_items: int = setting(512, "Items per request.")
    max_text_chars: int = setting(65536, "Characters per prompt, response or message.")
    prompt_cache_bytes: int = setting(
        8 * 1024 * 1024,
        "Bytes of recent prompts' tokens each model keeps per worker, so a prompt sent again is not tokenized "
        "again; 0 turns the cache off.",
    )
    max_body_bytes: int = setting(8 * 1024 * 1024, "Request body size in bytes.")
    max_inflight_body_bytes: int = setting(
        16 * 1024 * 1024,
        "Bytes of the request bodies in progress per worker: a declared length is reserved before the body is "
        "read, a chunked body is counted as it arrives.",
    )
    max_inflight_memory_bytes: int = setting(
        256 * 1024 * 1024,
        "Bytes the requests being scored may take per worker, estimated from what each holds once parsed (its "
        "texts, and the tokens each model keeps of each item); a request over what is left gets 429 (one larger "
        "than all of it is scored only when it is the only one).",
    )
    request_timeout_s: float = setting(
        60.0, "Default deadline in seconds; `X-Timeout-Ms` may shorten or lengthen it up to `max_timeout_s`."
    )
    max_timeout_s: float = setting(300.0, "The longest deadline `X-Timeout-Ms` may ask for, in seconds.")
    header_timeout_s: float = setting(
        10.0, "Seconds a client has to send a request's headers, from its first byte (or from connecting); then 408."
    )
    body_timeout_s: float = setting(
        60.0, "Seconds a client has to send a request's body once its headers are in; then 408."
    )
    graceful_timeout_s: float = setting(30.0, "Seconds to finish accepted work after SIGTERM.")
    boot_timeout_s: float = setting(180.0, "Seconds a worker may take to load and warm its models.")
    telemetry_window: int = setting(
        4096, "Items per model and worker in the drift-telemetry window; 0 turns telemetry off."
    )
    review_prompts: int = setting(
        0, "Prompts the review buffer keeps per model and worker (it retains their texts); 0 turns it off."
    )
    labelling: bool = setting(
        False,
        "Serve the labelling page `/label` and send the review buffer's groups to the label store, shared by every "
        "worker and replica.",
    )
    data_dir: Path = setting(Path("data"), "Directory of the server's own files: the label store's SQLite file.")
    label_db: str | None = setting(
        None,
        "The label store's database URL (`sqlite:///FILE` or `postgresql://...`); unset: `DATA_DIR/labels.sqlite`.",
    )
    label_lease_s: float = setting(
        600.0, "Seconds a labeller holds a task; an ordering not saved by then returns the task to the queue."
    )
    label_orderings: int = setting(1, "Independent orderings, each by a different labeller, asked for each new task.")
    log_level: str = setting("info", "Log level: debug, info, warning or error.")
    access_log: str = setting("errors", "Which requests get an access-log line: all, errors (status >= 400) or off.")
    metrics_dir: Path | None = setting(None, "Prometheus multiprocess directory (`rmserve.gunicorn_conf` sets it).")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `RMSERVE_*` variables, then explicit overrides (CLI flags)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in fields(cls):
            raw = environ.get(PREFIX + setting.name.upper())
            if raw is not None and raw != "":
                values[setting.name] = _parse(setting, raw)
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values).validated()

    def validated(self) -> Settings:
        for name in (
            "port",
            "workers",
            "threads",
            "max_batch_size",
            "max_queue_tokens",
            "max_items",
            "max_inflight_memory_bytes",
            "label_orderings",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{PREFIX}{name.upper()} must be positive, got {getattr(self, name)}")
        for name, zero in (
            ("max_batch_tokens", "each model's own"),
            ("executors", "automatic"),
            ("inference_threads", "automatic"),
            ("telemetry_window", "off"),
            ("review_prompts", "off"),
            ("prompt_cache_bytes", "off"),
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{PREFIX}{name.upper()} must be 0 ({zero}) or positive, got {getattr(self, name)}")
        if self.port > MAX_PORT:
            raise ValueError(f"{PREFIX}PORT must be at most {MAX_PORT}, got {self.port}")
        for name, value, choices in (
            ("log_level", self.log_level.lower(), LOG_LEVEL_CHOICES),
            ("access_log", self.access_log, ACCESS_LOG_CHOICES),
            ("runtime", self.runtime, RUNTIMES),
        ):
            if value not in choices:
                shown = getattr(self, name)
                raise ValueError(f"{PREFIX}{name.upper()} must be one of {', '.join(choices)}, got {shown!r}")
        self._runtime_installed()
        for name in ("header_timeout_s", "body_timeout_s", "label_lease_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{PREFIX}{name.upper()} must be positive, got {getattr(self, name)}")
        if self.max_padding_ratio < 1.0:
            raise ValueError(f"{PREFIX}MAX_PADDING_RATIO must be >= 1.0, got {self.max_padding_ratio}")
        if self.max_inflight_body_bytes < self.max_body_bytes:
            raise ValueError(
                f"{PREFIX}MAX_INFLIGHT_BODY_BYTES must be >= {PREFIX}MAX_BODY_BYTES ({self.max_body_bytes}): "
                "a body of the largest allowed size could never be read"
            )
        if self.max_queue_tokens < self.max_batch_tokens:
            raise ValueError(f"{PREFIX}MAX_QUEUE_TOKENS must be >= {PREFIX}MAX_BATCH_TOKENS")
        return self

    def _runtime_installed(self) -> None:
        """The runtime's package is there: a server that would fail at its first model load says so now."""
        if self.runtime == OPENVINO_BF16 and importlib.util.find_spec("openvino") is None:
            raise ValueError(f"{PREFIX}RUNTIME={OPENVINO_BF16} needs OpenVINO: pip install 'rmserve[openvino]'")

    def __repr__(self) -> str:
        """Like the dataclass repr, but keys never appear (logs and tracebacks print settings)."""
        shown = {setting.name: getattr(self, setting.name) for setting in fields(self)}
        shown["api_keys"] = f"<{len(self.api_keys)} redacted>"
        if self.label_db is not None:
            shown["label_db"] = URL_PASSWORD.sub(r"\1<redacted>@", self.label_db)
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes).validated()

    def all_api_keys(self) -> frozenset[str]:
        """Keys from the setting and from the keys file (read at start-up).

        A keys file that yields no key is an error, never "no authentication".
        """
        keys = set(self.api_keys)
        if self.api_keys_file is not None:
            variable = f"{PREFIX}API_KEYS_FILE={self.api_keys_file}"
            try:
                text = self.api_keys_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(f"{variable}: cannot read it: {error}") from None
            from_file = keys_in(text)
            if not from_file:
                raise ValueError(
                    f"{variable} holds no key (only blank or comment lines); refusing to serve without auth"
                )
            keys |= from_file
        return frozenset(keys)

    def pinned_version(self, name: str) -> int | None:
        for pin in self.pinned_versions:
            pinned_name, _, version = pin.partition("=")
            if pinned_name == name:
                return int(version)
        return None

    def cpus_per_worker(self) -> int:
        """This process's share of the CPUs it may use (affinity and cgroup quota), at least 1."""
        return max(1, usable_cpus() // self.workers)

    def executor_count(self) -> int:
        """Inference runs in flight per model: by default one single-threaded run per CPU."""
        return self.executors or max(1, self.cpus_per_worker() // (self.inference_threads or 1))

    def batch_tokens(self, model_budget: int | None) -> int:
        """A model's run budget: the operator's, else the model's own (`model_budget`, from its manifest), else
        the default; never more than can wait in its queue."""
        return min(self.max_batch_tokens or model_budget or DEFAULT_BATCH_TOKENS, self.max_queue_tokens)

    def request_threads(self) -> int:
        """gunicorn threads per worker: one per scoring request, plus the probes' own."""
        return self.threads + PROBE_THREADS

    def intra_op_threads(self) -> int:
        """ONNX Runtime threads of one run: by default the CPUs left to each executor (usually 1)."""
        return self.inference_threads or max(1, self.cpus_per_worker() // self.executor_count())

    def as_environ(self) -> dict[str, str]:
        """These settings as `RMSERVE_*` variables (hands CLI flags to gunicorn workers)."""
        environ = {}
        for setting in fields(self):
            value = getattr(self, setting.name)
            if value is None:
                continue
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            environ[PREFIX + setting.name.upper()] = text
        return environ


def keys_in(text: str) -> set[str]:
    """Keys one per line or comma-separated; blank lines and `#` comments (indented too) are not keys."""
    keys: set[str] = set()
    for line in text.splitlines():
        content = line.strip()
        if content.startswith("#"):
            continue
        keys.update(key.strip() for key in content.split(",") if key.strip())
    return keys


def _parse_bool(setting: dataclasses.Field[Any], raw: str) -> bool:
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{PREFIX}{setting.name.upper()}={raw!r}: expected true or false")


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (rounded down).

    `os.cpu_count()` is the node's count; inside a container limited to 2 CPUs on a 64-core
    node, 64 threads would fight over 2 CPUs' worth of time.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root)
    return max(1, min(cpus, math.floor(quota))) if quota is not None else max(1, cpus)


def _cgroup_quota(cgroup_root: Path) -> float | None:
    """CPUs' worth of time per period from cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`; None = no limit."""
    cpu_max = _read(cgroup_root / "cpu.max")  # v2: "max 100000" or "200000 100000"
    if cpu_max is not None:
        quota, period = cpu_max.split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    quota_us = _read(cgroup_root / "cpu" / "cpu.cfs_quota_us")  # v1: -1 = no limit
    period_us = _read(cgroup_root / "cpu" / "cpu.cfs_period_us")
    if quota_us is None or period_us is None or int(quota_us) <= 0:
        return None
    return int(quota_us) / int(period_us)


def _read(path: Path) -> str | None:
    """A kernel interface file's text, or None where this kernel or container has no such file."""
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return None


def _parse(setting: dataclasses.Field[Any], raw: str) -> Any:
    kind = str(setting.type)
    if kind == "bool":
        return _parse_bool(setting, raw)
    try:
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if kind.startswith("Path"):
            return Path(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as error:
        raise ValueError(f"{PREFIX}{setting.name.upper()}={raw!r}: {error}") from None
    return raw
