"""gunicorn, in-process: one worker with threads, the scheduler inside that worker.

One worker is the design (SQLite has one writer; the scheduler must run once). The scheduler is
started after the worker forks, guarded by the job lock. SIGTERM (systemctl stop) asks the jobs to
stop after their current unit of work (app.core.stop_flag); gunicorn lets requests in flight finish
within `graceful_timeout`, and `worker_exit` waits for the job in flight before the lock is released.
Every log line, gunicorn's own included, is structured and masked (app.logs).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from app import logs
from app.config import Config
from app.core import stop_flag

log = logging.getLogger(__name__)
GRACEFUL_TIMEOUT_SECONDS = 45  # systemd's TimeoutStopSec (60) leaves room beyond it
_LOG_CONFIG: list[Config] = []  # the config whose secrets gunicorn's own log lines must mask


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


class StructuredGunicornLogger(GunicornLogger):
    """gunicorn's error and access logs in the same masked one-line format as the app's."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        formatter = logs.formatter_for(_LOG_CONFIG[-1] if _LOG_CONFIG else None)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(formatter)


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
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": cfg.cashloop.log_level.lower(),
        "logger_class": StructuredGunicornLogger,
        # gunicorn's control socket could add workers at run time (two schedulers' worth of writers)
        # and would sit in $HOME, which the unit makes read-only; the appliance does without it.
        "control_socket_disable": True,
        # X-Forwarded-* is honoured only from the configured proxy addresses, and only when a proxy
        # is configured at all (app/web/proxy.py does the same for the app's own view of it).
        "forwarded_allow_ips": ",".join(cfg.ops.proxy_addresses) if cfg.cashloop.trusted_proxies else "",
    }


def _stop_jobs_on_sigterm(worker: Any) -> None:
    # gunicorn's own SIGTERM handler only stops the request loop; jobs learn it from the stop flag
    # at once, so the one in flight is done (or has stopped between units) by the time worker_exit
    # waits for it.
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        stop_flag.request()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def serve(cfg: Config, *, bind: str | None = None, threads: int = 8) -> None:
    """Run until SIGTERM/SIGINT."""
    holder: dict[str, Any] = {}
    _LOG_CONFIG.append(cfg)

    def factory() -> Any:
        holder["app"] = make_app(cfg)
        return holder["app"]

    def worker_exit(server: Any, worker: Any) -> None:
        from app.jobs import scheduler

        app = holder.get("app")
        if app is not None:
            scheduler.stop(app.extensions.get("cashloop_scheduler"))

    options = gunicorn_options(cfg, bind=bind, threads=threads)
    options["post_worker_init"] = _stop_jobs_on_sigterm
    options["worker_exit"] = worker_exit
    _Gunicorn(factory, options).run()
