"""`python -m web.worker`: one job worker, a Huey consumer with several threads, for the configured queue.

Run as many as you like, on any machines that share JOBS_FOLDER and (for more than one machine) a
JOB_QUEUE_URL=redis://... queue. Each picture goes through the gateway's own one-picture pipeline in
this process (`web.jobs.predictor`: same settings as the gateway, its own gRPC channel to
TF_SERVING_ADDRESS), or through JOB_PREDICTOR (`module:attribute`, a Predictor class, factory or
instance; `web.jobs.runner:HttpPredictor` posts each picture to a gateway at GATEWAY_URL with
JOB_API_KEY instead). At start, and every JOB_RECLAIM_INTERVAL_S, the worker queues again the chunks
that a killed worker left behind.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
import urllib.parse
from collections.abc import Mapping, Sequence

from web.jobs.queue import JobQueue
from web.jobs.runner import Finisher, Predictor
from web.settings import Settings, SettingsError

log = logging.getLogger("web.worker")


def load_predictor(spec: str) -> Predictor:
    """The predictor named by `module:attribute`: a class or factory is called without arguments."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"JOB_PREDICTOR must be module:attribute, not {spec!r}")
    target = getattr(importlib.import_module(module_name), attribute)
    if isinstance(target, type) and hasattr(target, "from_env"):
        target = target.from_env()
    elif isinstance(target, type) or (callable(target) and not hasattr(target, "predict")):
        target = target()
    predictor = target
    if not hasattr(predictor, "predict"):
        raise ValueError(f"JOB_PREDICTOR {spec!r} has no predict method")
    return predictor


def default_predictor(env: Mapping[str, str] | None = None) -> Predictor:
    """JOB_PREDICTOR's, else the gateway's pipeline in this process (settings from the environment)."""
    env = os.environ if env is None else env
    spec = env.get("JOB_PREDICTOR", "").strip()
    if spec:
        return load_predictor(spec)
    from web.jobs.predictor import GatewayPredictor  # the pipeline: imported only where it runs

    return GatewayPredictor(Settings.load(env))


def _reclaim_forever(queue: JobQueue, stop: threading.Event) -> None:
    while not stop.wait(queue.settings.reclaim_interval_s):
        try:
            queue.reclaim()
        except Exception:  # keep looking: a shared file system or Redis hiccup passes
            log.exception("looking for lost chunks failed")


def _redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{parts.hostname}:{parts.port or 6379}")
    return parts.geturl()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m web.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers", type=int, default=None, help="chunks run at once (default JOB_WORKER_THREADS)"
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"), help="default INFO")
    return parser


def main(
    argv: Sequence[str] | None = None,
    predictor: Predictor | None = None,
    finishers: Mapping[str, Finisher] | None = None,
) -> int:
    """Run one worker until SIGTERM or SIGINT (graceful: running chunks end first, see JobQueue.consumer)."""
    args = build_parser().parse_args(argv)
    # Prometheus' multiprocess folder is gunicorn's (the image sets it for the gateway); a worker's own
    # counters are not scraped (the gateway's /metrics reports jobs from JOBS_FOLDER), so it keeps
    # them in memory instead of failing on a folder only gunicorn creates.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.load().jobs  # the gateway's settings: the same JOBS_FOLDER default
        queue = JobQueue(settings, predictor or default_predictor(), finishers=finishers)
    except (ValueError, ImportError, AttributeError, SettingsError) as error:
        print(f"web.worker: {error}", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print("web.worker: --workers must be at least 1", file=sys.stderr)
        return 2
    requeued = queue.reclaim()
    if requeued:
        log.info("queued again %d lost chunks at start", len(requeued))
    stop = threading.Event()
    reaper = threading.Thread(target=_reclaim_forever, args=(queue, stop), name="reclaim", daemon=True)
    reaper.start()
    where = _redacted(settings.queue_url) if settings.queue_url else "SQLite"
    log.info("worker for %s, jobs in %s", where, settings.jobs_folder)
    try:
        queue.consumer(args.workers).run()
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
