"""Each server of the comparison, started exactly as deployed, on a free port, in its own process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.live_server import ROOT, START_TIMEOUT_S, answers_200, free_port, wait_until

Pairs = Sequence[tuple[str, str]]
IDLE_MARGIN = 0.05  # CPUs' worth above idle use that still counts as idle
TELEMETRY_OFF = "rmserve, telemetry off"
NAIVE = "naive Flask + ORT"
NAIVE_ONE_THREAD = "naive Flask + ORT, 1-thread runs"


def items_body(pairs: Pairs) -> str:
    """rmserve's items form, which the naive server and LitServe read too."""
    return json.dumps({"items": [{"prompt": prompt, "response": response} for prompt, response in pairs]})


def kserve_body(pairs: Pairs) -> str:
    """KServe v2 / Triton JSON: BYTES inputs `prompt` and `response`, shape [n, 1]."""
    shape = [len(pairs), 1]
    return json.dumps(
        {
            "inputs": [
                {"name": "prompt", "shape": shape, "datatype": "BYTES", "data": [prompt for prompt, _ in pairs]},
                {"name": "response", "shape": shape, "datatype": "BYTES", "data": [response for _, response in pairs]},
            ]
        }
    )


@dataclass(frozen=True)
class ServerSpec:
    name: str
    configuration: str  # how it is set up, for the report
    command: list[str]
    env: dict[str, str]
    ready_path: str
    score_path: str
    body: Callable[[Pairs], str] = items_body
    rmserve_metrics: bool = False  # exposes rmserve's /metrics (padding efficiency)
    shapes: tuple[str, ...] | None = None  # the traffic shapes it is measured on; None: every one

    def measures(self, shape: str) -> bool:
        return self.shapes is None or shape in self.shapes


def server_specs(repository: Path, model: str, cpus: int) -> list[ServerSpec]:
    python = sys.executable
    served = {"RMSERVE_MODEL_REPOSITORY": str(repository), "RMSERVE_MODELS": model, "RMSERVE_HOST": "127.0.0.1"}
    baseline = ["--repository", str(repository), "--model", model]

    def rmserve(
        name: str, configuration: str, env: dict[str, str], shapes: tuple[str, ...] | None = None
    ) -> ServerSpec:
        command = [str(Path(python).with_name("rmserve")), "serve"]
        return ServerSpec(
            name, configuration, command, {**served, **env}, "/readyz", "/v1/score", rmserve_metrics=True, shapes=shapes
        )

    def naive(name: str, configuration: str, threads: int, intra_op_threads: int) -> ServerSpec:
        gunicorn = [python, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1", "--threads", str(threads)]
        return ServerSpec(
            name,
            configuration,
            [*gunicorn, "--log-level", "warning", "bench.baselines.naive:create_app()"],
            {
                "NAIVE_REPOSITORY": str(repository),
                "NAIVE_MODEL": model,
                "NAIVE_INTRA_OP_THREADS": str(intra_op_threads),
            },
            "/health",
            "/v1/score",
        )

    return [
        rmserve(
            "rmserve",
            "`rmserve serve` with its defaults: 1 gunicorn worker, 128 scoring threads, one executor per CPU "
            "(single-threaded runs) sharing one queue and session, length-grouped batching, drift telemetry on",
            {},
        ),
        rmserve(
            TELEMETRY_OFF,
            "as above with `RMSERVE_TELEMETRY_WINDOW=0`: no drift window (flags are still computed); measured "
            "on the single and GRPO shapes only, for the cost of telemetry",
            {"RMSERVE_TELEMETRY_WINDOW": "0"},
            shapes=("single", "grpo"),
        ),
        rmserve(
            "rmserve, batching off",
            "as rmserve with `RMSERVE_MAX_BATCH_SIZE=1`: every item is its own run",
            {"RMSERVE_MAX_BATCH_SIZE": "1"},
        ),
        *(
            [
                rmserve(
                    "rmserve, int8",
                    f"as rmserve, serving `{model}-int8` (the same graph, weights stored int8, fp32 arithmetic)",
                    {"RMSERVE_MODELS": f"{model}-int8"},
                )
            ]
            if (repository / f"{model}-int8").is_dir()
            else []
        ),
        naive(
            NAIVE,
            "Flask app on gunicorn (gthread, 1 worker, 16 threads); each request tokenizes and runs its own "
            "items on its thread, one session with ONNX Runtime's default threads (one run uses every CPU)",
            threads=16,
            intra_op_threads=0,
        ),
        naive(
            NAIVE_ONE_THREAD,
            "the same with 32 gunicorn threads and single-threaded runs (`intra_op_num_threads` 1): one run per "
            "CPU side by side, the naive server's better setting for an encoder like MiniLM",
            threads=32,
            intra_op_threads=1,
        ),
        ServerSpec(
            "LitServe",
            f"LitServe {_version('litserve')}: `max_batch_size` 64, `batch_timeout` 5 ms, accelerator cpu, "
            f"{cpus} worker processes (`workers_per_device`), each with its own single-threaded session",
            [python, "-m", "bench.baselines.litserve_server", *baseline, "--instances", str(cpus)],
            {},
            "/health",
            "/v1/score",
        ),
        ServerSpec(
            "PyTriton",
            f"PyTriton {_version('nvidia-pytriton')}: `@batch`, dynamic batcher (max_batch_size 64, "
            f"max_queue_delay 100 us), {cpus} model instances sharing one single-threaded-run session; "
            "KServe v2 JSON with BYTES inputs",
            [python, "-m", "bench.baselines.pytriton_server", *baseline, "--instances", str(cpus)],
            {"PYTRITON_NO_TENSORSTORE": "1"},
            f"/v2/models/{model}/ready",
            f"/v2/models/{model}/infer",
            body=kserve_body,
        ),
    ]


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(not installed)"


@dataclass
class Running:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    base_url: str
    cold_start_s: float
    log_path: Path
    rss_peak_mb: float = 0.0
    rss_idle_mb: float = 0.0
    idle_cpu: float = 0.0  # CPUs' worth it uses with no requests (LitServe's loops poll)
    notes: list[str] = field(default_factory=list)

    def cpu_share(self, window_s: float) -> float:
        """CPUs' worth of time the server's processes used over the next `window_s` seconds."""
        before = tree_cpu_seconds(self.process.pid)
        time.sleep(window_s)
        return (tree_cpu_seconds(self.process.pid) - before) / window_s

    def wait_idle(self, timeout_s: float = 15.0) -> None:
        """Until the server is back to its idle CPU use: a client that gave up leaves work behind."""
        deadline = time.monotonic() + timeout_s
        while self.cpu_share(0.25) > self.idle_cpu + IDLE_MARGIN and time.monotonic() < deadline:
            pass

    def rss_mb(self) -> float:
        return tree_rss_mb(self.process.pid)

    def sample_rss(self) -> None:
        self.rss_peak_mb = max(self.rss_peak_mb, self.rss_mb())

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start(spec: ServerSpec, log_dir: Path) -> Running:
    """Start and wait for readiness; cold start = spawn to the first 200 from its readiness route."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("RMSERVE_")}
    env.update(spec.env)
    env.update({"RMSERVE_PORT": str(port), "PYTHONPATH": str(ROOT)})
    command = list(spec.command)
    if "gunicorn" in command:
        command[-1:-1] = ["--bind", f"127.0.0.1:{port}"]
    elif "--repository" in command:
        command += ["--port", str(port)]
    log_path = log_dir / f"{spec.name.split()[0].strip(',').lower()}-{port}.log"
    base_url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(
            lambda: answers_200(base_url + spec.ready_path) or process.poll() is not None,
            START_TIMEOUT_S,
            f"{spec.name} readiness",
            poll_s=0.05,
        )
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    if process.poll() is not None:
        raise RuntimeError(f"{spec.name} exited with {process.returncode}; see {log_path}")
    running = Running(spec, process, base_url, time.perf_counter() - started, log_path)
    running.rss_idle_mb = running.rss_mb()
    running.idle_cpu = running.cpu_share(1.0)
    return running


def tree_rss_mb(root_pid: int) -> float:
    """Resident memory of a process and all its descendants (LitServe and PyTriton run several)."""
    total_kb = 0
    for pid in _tree(root_pid):
        status = _read(Path(f"/proc/{pid}/status"))
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU time (user + system) used so far by a process and its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _tree(root_pid):
        stat = _read(Path(f"/proc/{pid}/stat"))
        if stat:
            after_name = stat.rsplit(")", 1)[1].split()  # fields 3.. of proc(5); utime, stime are 14 and 15
            total += (int(after_name[11]) + int(after_name[12])) / ticks
    return total


def _tree(root_pid: int) -> list[int]:
    """root_pid and its descendants, from /proc/<pid>/task/<tid>/children."""
    found, stack = [], [root_pid]
    while stack:
        pid = stack.pop()
        found.append(pid)
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:  # the process ended while we looked
            tasks = []
        for task in tasks:
            stack.extend(int(child) for child in _read(task / "children").split())
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # the process ended while we looked
        return ""
