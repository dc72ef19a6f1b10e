"""The `rea` Typer apps and what every command shares: settings, one-line errors, JSON input,
running a coroutine, and the entry point.

Every command talks to Temporal through ``client.make_client``; nothing in ``cli`` decides
anything a workflow should decide.
"""

import asyncio
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from temporalio.service import RPCError

from client import ServerUnreachable, exit_without_finalizing
from settings import Settings

# The project folder: the example campaign and the committed schema sit beside the package.
ROOT = Path(__file__).resolve().parents[1]

app = typer.Typer(help="openrea: a ranking engineer agent on Temporal.", no_args_is_help=True)
campaign_app = typer.Typer(
    help="Start, approve, inspect and steer campaigns.", no_args_is_help=True
)
app.add_typer(campaign_app, name="campaign")
runbook_app = typer.Typer(
    help="The failure patterns and remedies openrea applies on its own.", no_args_is_help=True
)
app.add_typer(runbook_app, name="runbook")


def make_console(stderr: bool = False) -> Console:
    """A console that wraps to the terminal, and off a terminal (a log, a pipe, CI) wraps
    nothing: lines stay whole for grep and copy, unless COLUMNS asks for a width."""
    probe = Console(stderr=stderr)
    if probe.is_terminal or "COLUMNS" in os.environ:
        return probe
    return Console(stderr=stderr, width=LOG_WIDTH, soft_wrap=True)


# Tables off a terminal are laid out this wide at most (they take only what they need).
LOG_WIDTH = 200
console = make_console()
err_console = make_console(stderr=True)

# Exit codes: 0 done; 1 the campaign refused (an update's validator) or failed, or a
# preflight failed; 2 a mistake in the command or its input, or no server; 3 a training
# run diverged; 130 interrupted (Ctrl-C).
REFUSED = 1

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


_overrides: dict[str, Any] = {}


@app.callback()
def _options(
    address: Annotated[
        str | None, typer.Option(help="Temporal frontend host:port [REA_TEMPORAL_ADDRESS].")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Temporal namespace [REA_NAMESPACE].")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Server database and results [REA_DATA_DIR].")
    ] = None,
) -> None:
    """openrea: a ranking engineer agent on Temporal."""
    given = {"temporal_address": address, "namespace": namespace, "data_dir": data_dir}
    _overrides.update({k: v for k, v in given.items() if v is not None})


def load_settings() -> Settings:
    """Settings from flags, then REA_* environment variables, then defaults."""
    try:
        return Settings(**_overrides)
    except ValidationError as err:
        problems = "; ".join(
            f"{e['loc'][0] if e['loc'] else 'settings'}: {e['msg']}" for e in err.errors()
        )
        raise fail(f"invalid settings: {problems}") from None


def rea_command() -> str:
    """How to run `rea` again from this shell, as it was run: ``rea`` when that is on the
    PATH (an activated virtualenv), else its path (e.g. ``.venv/bin/rea``), so that the
    commands we print can be pasted as printed."""
    invoked = Path(sys.argv[0])
    script = invoked if invoked.name == "rea" else Path(sys.executable).parent / "rea"
    on_path = shutil.which("rea")
    if on_path and script.exists() and Path(on_path).resolve() == script.resolve():
        return "rea"
    if not script.exists():
        return "rea"
    try:
        shown = str(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        shown = str(script.absolute())
    return shlex.quote(shown)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as a one-line error and return the exit to raise.

    Args:
        message: What went wrong and, where it helps, what to do about it.
        code: The exit code: 2 for errors of the tool or its input.

    Returns:
        The ``typer.Exit`` the caller raises (``raise fail(...) from None``).
    """
    # One logical line, however long: the terminal wraps it, and it greps and copies whole.
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine, turning an unreachable server into a one-line error.

    Ctrl-C and SIGTERM cancel the coroutine, so that its cleanup (stopping workers, then the
    server) runs in order, and then surface as KeyboardInterrupt.
    """

    async def main() -> T:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        for signum in previous:
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await task
        finally:
            for signum, handler in previous.items():
                loop.remove_signal_handler(signum)
                signal.signal(signum, handler)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    except ServerUnreachable as err:
        raise fail(str(err).replace("`rea ", f"`{rea_command()} ")) from None


def load_json(path: Path, model: type[M], label: str) -> M:
    """Parse a JSON file into ``model``; errors name the file and each bad field."""
    try:
        return model.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise fail(f"{label} {path} does not exist") from None
    except ValidationError as err:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
        )
        raise fail(f"{label} {path} is invalid:\n{problems}") from None


def make_input(model: type[M], flags: dict[str, str], **fields: Any) -> M:
    """Build an update's or signal's input from options; errors name the option."""
    try:
        return model(**fields)
    except ValidationError as err:
        problems = "; ".join(
            f"{flags.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}, got {e['input']!r}"
            for e in err.errors()
        )
        raise fail(problems) from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """The `rea` entry point."""
    # SIGTERM (systemd, `kill`, CI) shuts down like Ctrl-C: the dev server a command started
    # is stopped on the way out instead of being orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    code: int | str | None = 0
    try:
        app()
    except SystemExit as exit_:
        code = exit_.code
    except RPCError as err:
        err_console.print(f"[bold red]error:[/] Temporal said: {err.message}")
        code = 2
    if isinstance(code, str):
        err_console.print(code)
        code = 1
    exit_without_finalizing(code or 0)
