"""The one way to build a Temporal client: used by the CLI, the worker, tests and the replayer."""

import os
import sys
from typing import Any

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter

import observability
from settings import Settings


class ServerUnreachable(RuntimeError):
    """No Temporal server answers at the configured address."""


def client_options() -> dict[str, Any]:
    """Keyword arguments every client needs: pydantic payloads and tracing."""
    return {"data_converter": pydantic_data_converter, "interceptors": [TracingInterceptor()]}


async def make_client(settings: Settings) -> Client:
    """Connect to the configured server.

    Raises:
        ServerUnreachable: with a message that says how to start one.
    """
    # The CLI's client spans (StartWorkflow...) head the traces: export them too.
    observability.setup(settings)
    try:
        return await Client.connect(
            settings.temporal_address, namespace=settings.namespace, **client_options()
        )
    except RuntimeError as err:
        raise ServerUnreachable(
            f"no Temporal server at {settings.temporal_address} — run `rea up` "
            "or set REA_TEMPORAL_ADDRESS"
        ) from err


def exit_without_finalizing(code: int) -> None:
    """Flush and exit now, skipping interpreter finalization.

    The Temporal client's Rust threads can outlive the event loop and abort the interpreter
    while it finalizes (temporalio/sdk-python#300), turning a finished command into a crash
    with exit code 134. Call this once all work is done.
    """
    observability.flush()  # atexit would not run: export the spans still buffered
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
