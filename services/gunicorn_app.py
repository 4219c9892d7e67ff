"""Run the app factory under gunicorn, configured from settings (no config file)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from gunicorn.app.base import BaseApplication

from shared.config import Settings


class WellbeingServer(BaseApplication):
    def __init__(self, settings: Settings, options: dict):
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        # Each worker builds its own app after the fork: no shared connections.
        from services.app import create_app

        return create_app(self._settings)


def _prepare_metrics_dir(settings: Settings) -> None:
    prepare_metrics_dir(Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.data_dir / "prometheus"))))


def prepare_metrics_dir(directory: Path) -> None:
    """Processes of one server (gunicorn's workers, a Celery worker's pool) share metrics
    through files in ``directory``: start each server with it empty. Call it before
    anything imports prometheus_client, which reads the variable at import."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def _child_exit(_server, worker) -> None:  # noqa: ANN001
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def serve(settings: Settings, host: str, port: int, *, workers: int | None = None) -> None:
    _prepare_metrics_dir(settings)
    WellbeingServer(
        settings,
        {
            "bind": f"{host}:{port}",
            "workers": workers or settings.web_concurrency,
            "threads": settings.web_threads,
            "worker_class": "gthread",
            "timeout": 60,
            "graceful_timeout": 30,
            "keepalive": 5,
            # Recycle each worker after about 20,000 requests, at staggered times (jitter)
            # so they never all restart at once: bounds slow memory growth. Not much
            # sooner: a restart re-imports the app (about a second of CPU), and at a few
            # hundred requests/s a low limit restarts a worker every few seconds.
            "max_requests": 20000,
            "max_requests_jitter": 2000,
            "preload_app": False,
            "accesslog": None,
            "errorlog": "-",
            # Bound how long a slow client can hold a worker while sending headers.
            "limit_request_field_size": 8190,
            "child_exit": _child_exit,
        },
    ).run()
