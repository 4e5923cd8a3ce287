"""gunicorn configuration for rmserve: `rmserve serve` runs gunicorn with it (`python:rmserve.gunicorn_conf`).

gunicorn's server and worker objects are untyped, so the hooks take them as `Any`.

Each worker process loads its own copy of the models *after* fork (no preload), so every
ONNX Runtime session and its executor threads belong to the process that uses it. Request
threads mostly wait on the executors, so threaded workers with many threads are cheap. The
executors and ONNX Runtime threads of a worker are its share of the usable CPUs (affinity and
cgroup quota) unless RMSERVE_EXECUTORS / RMSERVE_INFERENCE_THREADS say otherwise.
"""

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from rmserve.config import Settings

settings = Settings.from_env()

wsgi_app = "rmserve.gunicorn_conf:worker_app()"
bind = [f"{settings.host}:{settings.port}"]
# gthread, except that the event loop receives each request whole (headers and body, within their timeouts)
# before a thread serves it: clients that trickle bytes hold no thread (rmserve/http/worker.py).
worker_class = "rmserve.http.worker.ReceivingWorker"
workers = settings.workers
threads = settings.request_threads()  # RMSERVE_THREADS for scoring + 2 kept for probes
preload_app = False
# After SIGTERM, workers stop accepting and finish accepted requests for this long.
graceful_timeout = round(settings.graceful_timeout_s)
# A worker silent this long is restarted; scoring never blocks the worker's main loop. While a
# worker loads its models it is kept alive for up to RMSERVE_BOOT_TIMEOUT_S instead (post_fork).
timeout = 120
BATCHER_STOP_S = 5  # after the drain, for the batcher threads to end (their queues are empty by then)
keepalive = 75  # longer than the idle timeouts of common client pools and load balancers
loglevel = settings.log_level
# rmserve writes its own access log (RMSERVE_ACCESS_LOG, rmserve.http.middleware), not gunicorn.
accesslog = None
errorlog = "-"
# No runtime control socket: nothing uses it, and the container's root filesystem is read-only.
control_socket_disable = True

# tokenizers' own thread pool stays off in the server (unless the operator sets it): the executors'
# runs already hold every core, and a request's two or twelve texts split across pool threads cost
# about 1.6x the CPU of tokenizing them on the request thread (docs/benchmarks.md, per-request cost).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Prometheus multiprocess mode: every worker writes its samples to files in one directory,
# which must hold no stale samples when the server starts and is cleared of dead workers' live
# gauges. prometheus_client picks its storage when first imported, so the variable is set here,
# in the master, before any import of it; workers inherit it. A directory given in
# RMSERVE_METRICS_DIR is the operator's: only prometheus_client's own sample files in it are
# removed, never anything else, and never the directory.
metrics_dir = settings.metrics_dir or Path(tempfile.mkdtemp(prefix="rmserve-metrics-"))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
os.environ["RMSERVE_METRICS_DIR"] = str(metrics_dir)
SAMPLE_FILES = ("counter_*.db", "gauge_*.db", "histogram_*.db", "summary_*.db")


# The API keys are read once, here in the master, so every worker serves with the same ones: a worker that
# restarts after a crash forks with them too, whatever the keys file holds by then. SIGHUP reads the file
# again for the workers gunicorn starts in place of the old ones (`on_reload`).
api_keys = [settings.all_api_keys()]  # one element, replaced on SIGHUP


# A worker that cannot start ends the server once, with its reason as the master's last line. The first such
# worker takes the one byte of `halt_token` (workers inherit both pipes through fork), writes why into
# `boot_failures` and exits with gunicorn's boot-error status, which stops the master; any other worker failing
# meanwhile exits quietly, since gunicorn's master crashes on a second boot error while it stops.
halt_token, halt_token_writer = os.pipe()
os.write(halt_token_writer, b"1")
boot_failures, boot_failure_writer = os.pipe()
for reader in (halt_token, boot_failures):
    os.set_blocking(reader, False)
WORKER_BOOT_ERROR = 3  # gunicorn's status for it: the master stops instead of forking the worker again
REASON_BYTES = 4096  # well under the pipe's buffer, so the write never blocks


def worker_app() -> Any:
    """`create_app()` in a worker; if it fails, the worker ends the server with the reason (`on_exit` prints it)."""
    from rmserve.app import create_app
    from rmserve.core.repository import InvalidModel

    try:
        return create_app(api_keys=api_keys[0])
    except (InvalidModel, ValueError, OSError) as error:  # a model or setting to fix: its sentence says what
        reason = str(error)
    except Exception as error:
        logging.getLogger("rmserve").exception("a worker could not start")  # a bug: its traceback
        reason = f"{type(error).__name__}: {error} (a bug: its traceback is above)"
    try:
        os.read(halt_token, 1)
    except BlockingIOError:  # another worker's failure is already stopping the server
        sys.exit(0)
    line = " ".join(reason.split()) + "\n"
    os.write(boot_failure_writer, line.encode()[:REASON_BYTES])
    sys.exit(WORKER_BOOT_ERROR)


def first_boot_failure() -> str | None:
    try:
        written = os.read(boot_failures, REASON_BYTES)
    except BlockingIOError:  # no worker failed
        return None
    return written.decode(errors="replace").splitlines()[0]


def remove_samples() -> None:
    for pattern in SAMPLE_FILES:
        for sample_file in metrics_dir.glob(pattern):
            sample_file.unlink(missing_ok=True)


def on_starting(server: Any) -> None:
    metrics_dir.mkdir(parents=True, exist_ok=True)
    remove_samples()


def on_exit(server: Any) -> None:
    remove_samples()
    if settings.metrics_dir is None:  # our own temporary directory, now empty
        shutil.rmtree(metrics_dir, ignore_errors=True)
    failure = first_boot_failure()
    if failure is not None:  # after gunicorn's "Reason: Worker failed to boot.", the reason itself
        print(f"rmserve serve: a worker could not start: {failure}", file=sys.stderr, flush=True)


def on_reload(server: Any) -> None:
    """SIGHUP, in the master before it starts new workers: read the keys file again. One that cannot be read
    or holds no key leaves the keys in use, with an error in the log: a reload never stops a running server."""
    try:
        api_keys[0] = settings.all_api_keys()
    except ValueError as error:
        server.log.error("keeping the %d API keys in use: %s", len(api_keys[0]), error)
        return
    server.log.info("read %d API keys; the new workers serve with them", len(api_keys[0]))


def post_fork(server: Any, worker: Any) -> None:
    """Send rmserve's log lines (model loading comes next) where gunicorn's go; keep a loading worker alive."""
    service_log = logging.getLogger("rmserve")
    service_log.handlers = logging.getLogger("gunicorn.error").handlers
    service_log.setLevel(settings.log_level.upper())
    service_log.propagate = False
    # gunicorn kills a worker silent for `timeout` s, booting or not; verifying and warming a big
    # model takes longer. Heartbeat until the app is up, for RMSERVE_BOOT_TIMEOUT_S at most.
    worker.rmserve_booted = threading.Event()

    def heartbeat() -> None:
        give_up = time.monotonic() + settings.boot_timeout_s
        while not worker.rmserve_booted.wait(1.0) and time.monotonic() < give_up:
            worker.notify()

    threading.Thread(target=heartbeat, name="boot-heartbeat", daemon=True).start()


def post_worker_init(worker: Any) -> None:
    """On SIGTERM, flip /readyz to 503 and rmserve_ready to 0 before gunicorn drains the worker."""
    worker.rmserve_booted.set()
    app_state = worker.wsgi.extensions["rmserve"]
    gunicorn_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        app_state.start_draining()
        if callable(gunicorn_handler):
            gunicorn_handler(signum, frame)
        # In the worker's event loop, not in the signal handler: it owns the sockets.
        worker.method_queue.defer(stop_listening, worker)

    signal.signal(signal.SIGTERM, on_sigterm)


def stop_listening(worker: Any) -> None:
    """Serve the connections the kernel already queued for this worker, then close its listeners.

    gunicorn only stops polling its listening sockets while it drains; the kernel keeps queueing
    new connections on them and resets them all when the worker exits: a client that reconnects
    during the drain sends its request into that queue and sees "connection reset", an accepted
    request lost. Closed, the socket refuses new connections at once (once every process holding
    it has closed it), which a client knows was never accepted.
    """
    for listener in worker.sockets:
        while True:
            queued = worker.nr_conns
            worker.accept(listener)  # non-blocking: returns without a connection once the queue is empty
            if worker.nr_conns == queued:
                break
        listener.close()


def worker_exit(server: Any, worker: Any) -> None:
    """Accepted requests are done (gunicorn waited for them); stop the batcher threads."""
    app_state = worker.wsgi.extensions["rmserve"] if hasattr(worker, "wsgi") else None
    if app_state is not None:
        app_state.drain(timeout=BATCHER_STOP_S)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
