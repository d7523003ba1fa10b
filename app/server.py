"""gunicorn, in-process: one worker with threads, the scheduler inside that worker.

One worker is the design (SQLite has one writer; the scheduler must run once). The scheduler is
started after the worker forks, guarded by the job lock, and stopped on SIGTERM after the job in
flight has finished.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.app.base import BaseApplication

from app.config import Config

log = logging.getLogger(__name__)


class _Gunicorn(BaseApplication):
    def __init__(self, factory: Any, options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._factory()


def make_app(cfg: Config, *, with_scheduler: bool = True) -> Any:
    """The WSGI app with its services, and the scheduler if this process wins the job lock."""
    from app.jobs import scheduler
    from app.services import build_services
    from app.web import create_app

    services = build_services(cfg)
    app = create_app(services)
    if with_scheduler and cfg.scheduler.enabled:
        app.extensions["cashloop_scheduler"] = scheduler.start(services)
    return app


def gunicorn_options(cfg: Config, *, bind: str | None = None, threads: int = 8) -> dict[str, Any]:
    """One gthread worker: SQLite has one writer and the scheduler must run in one process."""
    return {
        "bind": bind or cfg.cashloop.listen,
        "workers": 1,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 60,
        "graceful_timeout": 30,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": cfg.cashloop.log_level.lower(),
        # X-Forwarded-* is honoured only from a proxy on this machine, and only when configured.
        "forwarded_allow_ips": "127.0.0.1,::1" if cfg.cashloop.trusted_proxies else "",
    }


def serve(cfg: Config, *, bind: str | None = None, threads: int = 8) -> None:
    """Run until SIGTERM/SIGINT."""
    holder: dict[str, Any] = {}

    def factory() -> Any:
        holder["app"] = make_app(cfg)
        return holder["app"]

    def worker_exit(server: Any, worker: Any) -> None:
        from app.jobs import scheduler

        app = holder.get("app")
        if app is not None:
            scheduler.stop(app.extensions.get("cashloop_scheduler"))

    options = gunicorn_options(cfg, bind=bind, threads=threads)
    options["worker_exit"] = worker_exit
    _Gunicorn(factory, options).run()
