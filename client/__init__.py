"""The one way to build a Temporal client: used by the CLI, the worker, tests and the replayer.

Every process that connects (the CLI, the workers, the Slack app, a job reporting its end)
connects here: with TLS (and a client certificate for mTLS) when ``REA_TEMPORAL_TLS_*`` are
set, with an API key when ``REA_TEMPORAL_API_KEY`` is, and with one data converter whose
failures carry no stack trace.
"""

import dataclasses
import os
import sys
from typing import Any

import temporalio.api.failure.v1
from pydantic import ValidationError
from temporalio import workflow
from temporalio.client import Client, TLSConfig
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverter, PayloadConverter
from temporalio.exceptions import ApplicationError

import observability
from settings import Settings


class ServerUnreachable(RuntimeError):
    """No Temporal server answers at the configured address."""


class PublicFailureConverter(DefaultFailureConverter):
    """Failures as clients receive them: no stack trace, so no server paths or code.

    Every failure this process writes (workflow failures, update refusals, activity failures)
    goes through here; the worker's logs keep the traces (the SDK logs failed activities and
    workflow tasks with theirs). An update whose payload is not even JSON fails in the SDK's
    decoding, before any validator: it is refused as ``InvalidInput`` like every malformed
    input (``workflows.refusals.parse`` refuses the rest).
    """

    def to_failure(
        self,
        exception: BaseException,
        payload_converter: PayloadConverter,
        failure: temporalio.api.failure.v1.Failure,
    ) -> None:
        if isinstance(exception, ValidationError) and _in_update():
            update = workflow.current_update_info()
            name = update.name if update else "update"
            problems = "; ".join(e["msg"] for e in exception.errors())
            exception = ApplicationError(
                f"{name}: invalid input: {problems}", type="InvalidInput", non_retryable=True
            )
        super().to_failure(exception, payload_converter, failure)
        _strip_stack_traces(failure)


def _in_update() -> bool:
    return workflow.in_workflow() and workflow.current_update_info() is not None


def _strip_stack_traces(failure: temporalio.api.failure.v1.Failure) -> None:
    while True:
        failure.stack_trace = ""
        if not failure.HasField("cause"):
            return
        failure = failure.cause


DATA_CONVERTER = dataclasses.replace(
    pydantic_data_converter, failure_converter_class=PublicFailureConverter
)


def client_options() -> dict[str, Any]:
    """Keyword arguments every client needs: pydantic payloads, public failures, tracing."""
    return {"data_converter": DATA_CONVERTER, "interceptors": [TracingInterceptor()]}


def connect_options(settings: Settings) -> dict[str, Any]:
    """TLS and API key arguments of ``Client.connect`` from the settings.

    Raises:
        ServerUnreachable: a certificate file named in the settings cannot be read.
    """
    options: dict[str, Any] = {}
    if settings.tls_enabled:
        try:
            ca, cert, key = (
                path.read_bytes() if path else None
                for path in (
                    settings.temporal_tls_ca,
                    settings.temporal_tls_cert,
                    settings.temporal_tls_key,
                )
            )
        except OSError as err:
            raise ServerUnreachable(
                f"cannot read {err.filename} ({err.strerror}): check REA_TEMPORAL_TLS_CA, "
                "REA_TEMPORAL_TLS_CERT and REA_TEMPORAL_TLS_KEY"
            ) from None
        options["tls"] = TLSConfig(
            server_root_ca_cert=ca,
            domain=settings.temporal_tls_server_name or None,
            client_cert=cert,
            client_private_key=key,
        )
    if settings.temporal_api_key:
        options["api_key"] = settings.temporal_api_key
        options.setdefault("tls", True)  # an API key travels over TLS only
    return options


async def make_client(settings: Settings) -> Client:
    """Connect to the configured server.

    Raises:
        ServerUnreachable: with a message that says how to start one.
    """
    # The CLI's client spans (StartWorkflow...) head the traces: export them too.
    observability.setup(settings)
    options = connect_options(settings)
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.namespace,
            **options,
            **client_options(),
        )
    except RuntimeError as err:
        raise ServerUnreachable(unreachable(settings, err)) from err


def unreachable(settings: Settings, err: BaseException) -> str:
    """One line: why the connection failed, and what to set."""
    cause = " ".join(str(err).split())
    if settings.tls_enabled or settings.temporal_api_key:
        return (
            f"cannot connect to {settings.temporal_address} over TLS ({cause[-200:]}); check "
            "REA_TEMPORAL_ADDRESS and the REA_TEMPORAL_TLS_* / REA_TEMPORAL_API_KEY settings"
        )
    tls_hint = (
        "; a server that asks for TLS needs REA_TEMPORAL_TLS_CA (and REA_TEMPORAL_TLS_CERT / "
        "_KEY for mTLS)"
        if "connection" in cause.lower() and "refused" not in cause.lower()
        else ""
    )
    return (
        f"no Temporal server at {settings.temporal_address} — run `rea up` or set "
        f"REA_TEMPORAL_ADDRESS{tls_hint}"
    )


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
