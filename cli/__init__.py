"""`rea`: the command line over the Temporal client (typer + rich).

Every command talks to Temporal through ``client.make_client``; nothing here decides anything
a workflow should decide. One module per group of commands, along the Typer apps:

- ``apps``: the Typer apps, settings, one-line errors, ``main`` (the entry point)
- ``serve``: server, worker, up, slack, and ``embedded`` (a server and workers for one command)
- ``start``: `rea campaign start` (a taken id refused, Ctrl-C said plainly or asked)
- ``campaign``: `rea campaign ...`, over ``handle`` (queries, updates) and ``follow`` (progress)
- ``runbook``: `rea runbook ...`
- ``local``: tensorboard, train, compare, insights, schema (no Temporal)
- ``render_campaign`` and ``render``: rich tables, lines and progress bars, computing nothing
"""

# `rea --help` lists commands in the order they were registered: the servers' first.
from cli import serve

# isort: split
from cli import start

# isort: split
from cli import campaign, local, runbook
from cli.apps import app, main
from cli.render import progress_display
from cli.serve import embedded

__all__ = [
    "app",
    "campaign",
    "embedded",
    "local",
    "main",
    "progress_display",
    "runbook",
    "serve",
    "start",
]
