"""Where this process's spans and metrics go (OpenTelemetry), installed once per process.

The composition roots (``worker.py``, ``client.make_client``, ``activities.job_entry``) call
``setup`` once per process; the spans and metrics themselves are made elsewhere (the trial's
in ``activities.telemetry``, the client → workflow → activity spans by
``temporalio.contrib.opentelemetry.TracingInterceptor``).

Where they go (``settings.py``): ``REA_OTLP_ENDPOINT`` (OTLP over gRPC, or over HTTP when
``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``; headers, certificates and timeouts from the
standard ``OTEL_EXPORTER_OTLP_*`` variables), ``REA_TRACE_CONSOLE`` (stderr) and
``REA_TRACE_FILE`` (JSON lines appended to ``<data_dir>/traces.jsonl``). With none of them
set nothing is installed, and spans cost nothing.
"""

import atexit
import os
import threading
from typing import Any

from opentelemetry import metrics, trace

from settings import Settings

SERVICE_NAME = "openrea"
TRACE_FILE = "traces.jsonl"

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
