"""OpenTelemetry for openrea: where spans and metrics go, and the trial's attributes and metrics.

Here, in ``activities/``, because exporting is a side effect and the trial bookkeeping below
is called by activities (and by a job's own process); the composition roots (``worker.py``,
``client.make_client``, ``activities.job_entry``) call ``setup`` once per process.

Spans come from ``temporalio.contrib.opentelemetry.TracingInterceptor`` (client → workflow →
activity), from the trainer ("train", "epoch") and from a job's process, which joins its
launcher's trace through the W3C ``TRACEPARENT`` variable.

Where they go (``settings.py``): ``REA_OTLP_ENDPOINT`` (OTLP over gRPC, or over HTTP when
``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``; headers, certificates and timeouts from the
standard ``OTEL_EXPORTER_OTLP_*`` variables), ``REA_TRACE_CONSOLE`` (stderr) and
``REA_TRACE_FILE`` (JSON lines appended to ``<data_dir>/traces.jsonl``). With none of them
set nothing is installed, and spans cost nothing.
"""

import atexit
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opentelemetry import metrics, propagate, trace
from temporalio import activity

from contracts import TrialResult, TrialSpec
from settings import Settings

SERVICE_NAME = "openrea"
TRACE_FILE = "traces.jsonl"

_meter = metrics.get_meter("openrea")
# Proxies until a provider is installed: instruments made at import still export afterwards.
TRIALS = _meter.create_counter("rea.trials", unit="{trial}", description="Trials by end state.")
DEVICE_HOURS = _meter.create_counter(
    "rea.device_hours", unit="h", description="Device-hours charged, by campaign and phase."
)
QUEUE_LATENCY = _meter.create_histogram(
    "rea.activity.queue_latency",
    unit="s",
    description="From an activity attempt's scheduling to its start on a worker.",
)

_installed = False
_lock = threading.Lock()
_providers: list[Any] = []


def setup(settings: Settings) -> bool:
    """Install tracer and meter providers for this process, once; True when installed.

    Nothing is installed when no destination is configured, so that a process without
    telemetry pays nothing (and tests may install their own providers).
    """
    global _installed
    endpoint = settings.otlp_endpoint
    if not (endpoint or settings.trace_console or settings.trace_file):
        return False
    with _lock:
        if _installed:
            return True
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            MetricReader,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        resource = Resource.create({"service.name": SERVICE_NAME})
        tracer_provider = TracerProvider(resource=resource)
        readers: list[MetricReader] = []
        if endpoint:
            spans, points = _otlp_exporters(endpoint)
            tracer_provider.add_span_processor(BatchSpanProcessor(spans))
            readers.append(PeriodicExportingMetricReader(points))
        if settings.trace_console:
            tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        if settings.trace_file:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            # Line-buffered and appended: the CLI, workers and jobs share the file, one
            # whole span per write.
            out = (settings.data_dir / TRACE_FILE).open("a", buffering=1)
            exporter = ConsoleSpanExporter(
                out=out, formatter=lambda span: span.to_json(indent=None) + "\n"
            )
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        install(tracer_provider, meter_provider)
        _installed = True
        return True


def install(tracer_provider: Any, meter_provider: Any) -> None:
    """Make these the process's providers (OpenTelemetry allows it once per process) and
    flush them at exit (``flush`` too: ``exit_without_finalizing`` skips ``atexit``)."""
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _providers[:] = [tracer_provider, meter_provider]
    atexit.register(flush)


def flush() -> None:
    """Export what is buffered, then stop the exporters; a no-op without ``setup``."""
    for provider in _providers:
        provider.shutdown()
    _providers.clear()


def _otlp_exporters(endpoint: str) -> tuple[Any, Any]:
    """Span and metric exporters for ``endpoint`` over the protocol the standard variable
    names (gRPC by default, as the OTLP specification says)."""
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Given explicitly, the HTTP exporters take the full path of each signal.
        base = endpoint.rstrip("/")
        return (
            OTLPSpanExporter(endpoint=f"{base}/v1/traces"),
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics"),
        )
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
        OTLPMetricExporter as GrpcMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcSpanExporter,
    )

    return GrpcSpanExporter(endpoint=endpoint), GrpcMetricExporter(endpoint=endpoint)


# ---- the trial's attributes and metrics ------------------------------------------------------


def trial_attributes(spec: TrialSpec) -> dict[str, Any]:
    """What links a span to its campaign, hypotheses, trial and planned cost."""
    return {
        "rea.campaign_id": spec.campaign_id,
        "rea.trial_id": spec.trial_id,
        "rea.hypothesis_ids": list(spec.hypothesis_ids),
        "rea.phase": spec.phase,
        "rea.arm": spec.arm,
        "rea.seed": spec.model.seed,
        "rea.estimated_device_hours": spec.estimated_device_hours,
    }


def result_attributes(result: TrialResult) -> dict[str, Any]:
    """How the trial ended and what it cost."""
    found: dict[str, Any] = {"rea.state": result.state, "rea.device_hours": result.device_hours}
    if result.validation is not None:
        for name, value in result.validation.model_dump().items():
            found[f"rea.validation.{name}"] = value
    return found


def start_trial(spec: TrialSpec) -> None:
    """Tag the current span (the activity's, or a job's) with the trial."""
    trace.get_current_span().set_attributes(trial_attributes(spec))


def end_trial(spec: TrialSpec, result: TrialResult) -> TrialResult:
    """Tag the current span with the outcome and count the trial and its cost."""
    trace.get_current_span().set_attributes(result_attributes(result))
    TRIALS.add(1, {"state": result.state, "phase": spec.phase})
    DEVICE_HOURS.add(result.device_hours, {"campaign_id": spec.campaign_id, "phase": spec.phase})
    return result


def record_queue_latency() -> None:
    """Seconds this activity attempt waited in its task queue for a worker."""
    info = activity.info()
    # Both times are the server's: no clock skew between hosts.
    waited = info.started_time - info.current_attempt_scheduled_time
    QUEUE_LATENCY.record(max(waited.total_seconds(), 0.0), {"activity": info.activity_type})


# ---- a job's process joins its launcher's trace ------------------------------------------


def trace_env() -> dict[str, str]:
    """``TRACEPARENT`` (and ``TRACESTATE``) of the current span, for a child process."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {key.upper(): value for key, value in carrier.items()}


def context_from_env(env: Mapping[str, str] = os.environ) -> Any:
    """The context a parent process handed over in ``TRACEPARENT``; empty without it."""
    carrier = {key.lower(): env[key] for key in ("TRACEPARENT", "TRACESTATE") if key in env}
    return propagate.extract(carrier)


def tensorboard_root(data_dir: Path) -> Path:
    """The folder of every campaign's TensorBoard runs."""
    return data_dir / "tensorboard"


def tensorboard_dir(data_dir: Path, spec: TrialSpec) -> Path:
    """Where a trial's TensorBoard event files go: one run per trial, one folder per campaign
    (``rea tensorboard CAMPAIGN`` points TensorBoard at it)."""
    return tensorboard_root(data_dir) / spec.campaign_id / spec.trial_id
