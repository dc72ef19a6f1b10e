"""Commands that run the pieces: the Temporal dev server, workers, both at once (`rea up`),
the Slack app; and ``embedded``, a server and workers for the length of one command."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import typer
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

import devserver
from cli.apps import app, console, fail, load_settings, rea_command, run
from client import make_client
from settings import Settings
from workflows.options import TRIAL_NON_RETRYABLE


@app.command()
def server() -> None:
    """Run the Temporal dev server (SQLite under the data dir, Web UI) in the foreground."""
    settings = load_settings()
    with dev_server(settings, http=True) as dev:
        console.print(addresses(settings), soft_wrap=True)
        with contextlib.suppress(KeyboardInterrupt):
            dev.wait()


def addresses(settings: Settings) -> str:
    """The server's three addresses, one per line, as clients use them."""
    return (
        f"  gRPC (SDKs, temporal CLI):  {settings.temporal_address}\n"
        f"  HTTP API (docs/api.md):     {settings.http_url}\n"
        f"  Web UI:                     {settings.ui_url}"
    )


@contextlib.contextmanager
def dev_server(settings: Settings, http: bool = False) -> Iterator[devserver.DevServer]:
    """The dev server for one command; a port in use or a failed start is a one-line error.

    Args:
        http: Serve the HTTP API on ``REA_HTTP_PORT`` (`rea up`, `rea server`).
    """
    dev = devserver.DevServer(settings, http=http)
    try:
        dev.start()
    except (devserver.ServerStartError, FileNotFoundError) as err:
        raise fail(str(err)) from None
    try:
        yield dev
    finally:
        dev.stop()


@app.command()
def worker(
    role: Annotated[
        list[str] | None, typer.Option(help="orchestration, training and/or jobs (default: all).")
    ] = None,
) -> None:
    """Run workers against the configured server until interrupted."""
    from worker import ROLES, run_workers

    roles = tuple(role or ROLES)
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise fail(f"--role: unknown role(s) {sorted(unknown)}; choose from {list(ROLES)}")
    quiet_expected_failures()
    with contextlib.suppress(KeyboardInterrupt):
        run(run_workers(load_settings(), roles))  # type: ignore[arg-type]


@app.command()
def up() -> None:
    """Run the dev server and a worker with every role (and the Slack app when Slack is
    configured), and keep them running."""
    settings = load_settings()
    quiet_expected_failures()
    with dev_server(settings, http=True):
        slack = (
            f"\n  Slack app:                  port {settings.slack_port}"
            if settings.slack_configured
            else ""
        )
        console.print(
            f"openrea is up (Ctrl-C stops it; campaigns wait in {settings.data_dir}):\n"
            f"{addresses(settings)}{slack}\n"
            f"Start a campaign in another shell: {rea_command()} campaign start",
            soft_wrap=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            run(_workers_and_slack(settings))


async def _workers_and_slack(settings: Settings) -> None:
    """The workers, and beside them the Slack app when its token and secret are set."""
    from worker import run_workers

    if not settings.slack_configured:
        await run_workers(settings)
        return
    from integrations.slack import run_slack_app

    client = await make_client(settings)
    slack = asyncio.create_task(run_slack_app(settings, client))
    try:
        await run_workers(settings, client=client)
    finally:
        slack.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slack


@app.command()
def slack() -> None:
    """Run the Slack app: approve, reject, extend budgets and answer escalated trials from
    Slack's buttons (Slack sends them to port REA_SLACK_PORT, path /slack/events)."""
    from integrations.slack import missing_settings, run_slack_app

    settings = load_settings()
    if missing := missing_settings(settings):
        raise fail(
            f"{' and '.join(missing)} not set: the Slack app needs the bot token and the "
            "signing secret of your Slack app (see README, Slack)"
        )

    async def main() -> None:
        await run_slack_app(settings, await make_client(settings))

    with contextlib.suppress(KeyboardInterrupt):
        run(main())


@contextlib.asynccontextmanager
async def embedded(settings: Settings) -> AsyncIterator[Client]:
    """A dev server and in-process workers for the length of one command.

    Args:
        settings: The server's address, ports and data dir (free ones for a private server).

    Yields:
        A client of the server; the workers stop, then the server, when the block ends.
    """
    from worker import run_workers

    quiet_expected_failures()
    with dev_server(settings):
        client = await make_client(settings)
        workers = asyncio.create_task(run_workers(settings, client=client))
        try:
            yield client
        finally:
            workers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await workers


class _ExpectedFailures(logging.Filter):
    """A failed activity whose error no retry fixes (bad data, a model that cannot fit, a
    trial error the retry policy never retries) is the user's to fix or the runbooks', and the
    campaign says how: one line on the console, not a traceback. Other failures keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        if isinstance(err, ApplicationError) and (
            err.non_retryable or err.type in TRIAL_NON_RETRYABLE
        ):
            # Which activity of which workflow, not the SDK's dict of eight ids per line.
            details = getattr(record, "temporal_activity", None)
            where = (
                f"{details.get('activity_type')} of {details.get('workflow_id')} failed"
                if isinstance(details, dict)
                else record.getMessage()
            )
            record.msg = f"{where}: {err.type}: {err.message} (not retried)"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


_QUIET = _ExpectedFailures()


def quiet_expected_failures() -> None:
    """Workers' console logging: warnings and errors, expected failures on one line."""
    # On the activity logger too, so that it holds whoever set up the handlers (a benchmark).
    logging.getLogger("temporalio.activity").addFilter(_QUIET)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_QUIET)
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
