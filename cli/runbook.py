"""`rea runbook ...`: the failure patterns and remedies openrea applies on its own, and an
engineer's answer to an escalated trial saved as a new one."""

from pathlib import Path
from typing import Annotated

import typer

import runbooks
from cli.apps import console, fail, load_settings, run, runbook_app
from cli.handle import campaign_handle, query_status
from cli.render import render_runbook
from client import make_client
from contracts import CampaignStatus


@runbook_app.command("list")
def runbook_list() -> None:
    """The runbook entries in matching order: what openrea recognises and tries."""
    console.print(render_runbook(load_runbook_or_fail()))
    console.print(f"Shipped entries: {runbooks.BUILTIN_DIR}; yours: {load_settings().runbook_dir}")


@runbook_app.command("check")
def runbook_check(
    folder: Annotated[Path | None, typer.Argument(help="A folder of entries to check.")] = None,
) -> None:
    """Validate the runbooks (the shipped ones, yours, and FOLDER): errors name file and field."""
    book = load_runbook_or_fail(*([folder] if folder else []))
    console.print(f"{len(book.entries)} runbook entries are valid.")


@runbook_app.command("add-from-escalation")
def runbook_add_from_escalation(
    campaign_id: str,
    trial_id: str,
    entry_id: Annotated[
        str, typer.Option("--id", help="The new entry's id (default: from the error type).")
    ] = "",
    message: Annotated[
        str,
        typer.Option(help="A regular expression the error must contain (default: its start)."),
    ] = "",
) -> None:
    """Save an engineer's answer to an escalated trial as a runbook entry, so that openrea
    handles the same failure on its own next time."""

    async def main() -> CampaignStatus:
        return await query_status(campaign_handle(await make_client(load_settings()), campaign_id))

    status = run(main())
    answered = [
        e for e in status.escalations if e.trial_id == trial_id and e.resolution is not None
    ]
    if not answered:
        waiting = [e.trial_id for e in status.escalations]
        raise fail(
            f"trial {trial_id} of {campaign_id} has no answered escalation (escalated: "
            f"{waiting or 'none'}); answer it first with `rea campaign resolve`"
        )
    entry = runbooks.entry_from_escalation(
        answered[-1], f"{campaign_id}/{trial_id}", entry_id=entry_id, message=message
    )
    folder = load_settings().runbook_dir
    path = folder / f"{entry.id}.yaml"
    if path.exists():
        raise fail(f"{path} exists; choose another --id")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(runbooks.entry_yaml(entry))
    try:
        runbooks.load_runbook(folder)
    except runbooks.RunbookError as err:
        path.unlink()
        raise fail(str(err)) from None
    console.print(f"Saved {path}:")
    console.print(path.read_text(), markup=False)


def load_runbook_or_fail(*folders: Path) -> runbooks.Runbook:
    """The shipped runbook with the engineer's entries and ``folders``; errors are one line."""
    try:
        return runbooks.load_runbook(load_settings().runbook_dir, *folders)
    except runbooks.RunbookError as err:
        raise fail(str(err)) from None
