"""`flask worker`, `flask cron` and `flask sweep`."""

from __future__ import annotations

import faulthandler
import signal
import sys

import click
from flask import Flask, current_app


def _stacks_on_sigusr2() -> None:
    """`kill -USR2 <pid>` prints every thread's stack to stderr (the log) and goes on: how to
    see where a silent worker, work horse or cron process is (a forked horse inherits it)."""
    if not hasattr(signal, "SIGUSR2"):
        return
    # faulthandler writes to a file descriptor. A command run in-process (click's CliRunner,
    # an embedding program) has a sys.stderr without one; the process's own stderr then.
    for stream in (sys.stderr, sys.__stderr__):
        if stream is None:  # started without a stderr at all
            continue
        try:
            stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            continue
        faulthandler.register(signal.SIGUSR2, file=stream, all_threads=True)
        return


def register(app: Flask) -> None:
    """Attach the job commands to the app's CLI."""

    @app.cli.command("worker")
    @click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
    @click.option("--simple", is_flag=True, help="Run jobs in this process (no fork).")
    def worker(burst: bool, simple: bool) -> None:
        """Run an RQ worker; sweeps the outbox first, reconnects when Redis goes away."""
        from . import backend
        from .rqwork import run_worker

        if backend().kind != "rq":
            raise click.UsageError("REDIS_URL is not set: jobs run in the web process.")
        _stacks_on_sigusr2()
        run_worker(current_app._get_current_object(),  # type: ignore[attr-defined]
                   burst=burst, simple=simple,
                   echo=click.echo)

    @app.cli.command("cron")
    @click.option("--interval", type=int, default=None,
                  help="Seconds between outbox sweeps and retry passes "
                       "(default JOBS_SWEEP_SECONDS, 60).")
    def cron(interval: int | None) -> None:
        """Run RQ's cron scheduler for every scheduled task (one per deployment)."""
        from . import backend
        from .rqwork import run_cron

        if backend().kind != "rq":
            raise click.UsageError("REDIS_URL is not set: the web process runs the schedule.")
        _stacks_on_sigusr2()
        app_obj = current_app._get_current_object()  # type: ignore[attr-defined]
        run_cron(app_obj, interval or int(app_obj.config["JOBS_SWEEP_SECONDS"]),
                 echo=click.echo)

    @app.cli.command("sweep")
    def sweep_cmd() -> None:
        """Hand over outbox items that were never done (for a system cron)."""
        from .outbox import sweep

        click.echo(f"{sweep()} item(s) dispatched")
