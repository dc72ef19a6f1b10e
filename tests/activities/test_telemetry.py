"""Traces, metrics and TensorBoard events of real (tiny) trials on a real Temporal server."""

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

import observability
from activities.backends.local import LocalProcessRunner
from activities.training import TrainingActivities
from cli import app
from contracts import DatasetRef, ModelSpec, TrialResult, TrialSpec
from ranking_models.errors import DivergenceError
from ranking_models.trainer import train


@workflow.defn(sandboxed=False)
class OneTrial:
    """The campaign's call of the training activity, and nothing else."""

    @workflow.run
    async def run(self, spec: TrialSpec) -> TrialResult:
        return await workflow.execute_activity(
            "train_trial",
            spec,
            result_type=TrialResult,
            start_to_close_timeout=timedelta(minutes=10),
        )


@pytest.fixture(scope="session")
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    """The process's providers, in memory. OpenTelemetry takes one per process, so this
    installs them once; nothing else in the test run installs any (``observability.setup`` only
    does when a destination is configured)."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    observability.install(tracer_provider, MeterProvider(metric_readers=[reader]))
    assert trace.get_tracer_provider() is tracer_provider, "a provider was installed earlier"
    yield spans, reader
    spans.shutdown()  # later tests' spans are dropped, not kept in memory


def tiny_spec(campaign_id: str, **model: Any) -> TrialSpec:
    return TrialSpec(
        campaign_id=campaign_id,
        trial_id="t1",
        phase="validation",
        hypothesis_ids=["h-wider-embeddings"],
        arm="v-wider-embeddings",
        estimated_device_hours=0.25,
        model=ModelSpec(**({"epochs": 2, "batch_size": 128} | model)),
        dataset=DatasetRef(max_rows=3000),
    )


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def total(reader: InMemoryMetricReader, name: str, **attributes: str) -> float:
    return sum(
        p.value for p in points(reader, name) if attributes.items() <= dict(p.attributes).items()
    )


def ancestors(span: ReadableSpan, spans: list[ReadableSpan]) -> list[ReadableSpan]:
    by_id = {s.context.span_id: s for s in spans}
    found = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        found.append(span)
    return found


def scalars(folder: Path, tag: str) -> list[float]:
    events = EventAccumulator(str(folder))
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return []
    return [e.value for e in events.Scalars(tag)]


async def test_a_trial_is_traced_from_the_client_to_each_epoch_counted_and_plotted(
    time_skipping_env: WorkflowEnvironment,
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader],
    tmp_path: Path,
) -> None:
    exported, reader = otel
    client = time_skipping_env.client  # carries TracingInterceptor, as every client does
    queue, campaign = f"telemetry-{uuid.uuid4()}", f"campaign-{uuid.uuid4().hex[:8]}"
    spec = tiny_spec(campaign)
    succeeded_before = total(reader, "rea.trials", state="succeeded", phase="validation")
    training = TrainingActivities(train=train, data_dir=tmp_path)

    async with Worker(
        client,
        task_queue=queue,
        workflows=[OneTrial],
        activities=[training.train_trial],
        activity_executor=ThreadPoolExecutor(max_workers=1),
    ):
        result = await client.execute_workflow(OneTrial.run, spec, id=campaign, task_queue=queue)

    assert result.state == "succeeded" and result.validation is not None
    spans = list(exported.get_finished_spans())
    [trained] = [s for s in spans if s.name == "train" and s.context.trace_id]
    chain = ancestors(trained, spans)
    # TracingInterceptor's workflow spans (zero-length) hang off the client's span: the
    # workflow's run and its activity's start are siblings under StartWorkflow.
    assert [s.name for s in chain] == [
        "RunActivity:train_trial",
        "StartActivity:train_trial",
        "StartWorkflow:OneTrial",
    ]
    [run_workflow] = [s for s in spans if s.name == "RunWorkflow:OneTrial"]
    assert run_workflow.parent is not None
    assert run_workflow.parent.span_id == chain[-1].context.span_id
    run_activity = chain[0]
    attributes = dict(run_activity.attributes or {})
    assert attributes["rea.campaign_id"] == campaign and attributes["rea.trial_id"] == "t1"
    assert attributes["rea.hypothesis_ids"] == ("h-wider-embeddings",)
    assert attributes["rea.estimated_device_hours"] == 0.25
    assert attributes["rea.state"] == "succeeded"
    assert attributes["rea.device_hours"] == result.device_hours > 0
    assert attributes["rea.validation.ne"] == result.validation.ne
    # One "epoch" span per epoch under "train", carrying that epoch's validation NE.
    epochs = [
        s
        for s in spans
        if s.name == "epoch" and s.parent and s.parent.span_id == trained.context.span_id
    ]
    assert [dict(s.attributes or {})["rea.validation.ne"] for s in epochs] == result.epoch_values

    # Metrics: the trial counted by state and phase, its cost by campaign, its queue wait.
    assert total(reader, "rea.trials", state="succeeded", phase="validation") == (
        succeeded_before + 1
    )
    assert total(reader, "rea.device_hours", campaign_id=campaign) == result.device_hours
    waits = [p for p in points(reader, "rea.activity.queue_latency") if p.attributes]
    assert any(p.attributes["activity"] == "train_trial" and p.count >= 1 for p in waits)

    # TensorBoard: every step's loss, each epoch's validation metrics, the test metrics.
    events = tmp_path / "tensorboard" / campaign / "t1"
    assert len(scalars(events, "train/loss")) == result.steps
    assert scalars(events, "validation/ne") == pytest.approx(result.epoch_values)
    assert len(scalars(events, "validation/auc")) == len(scalars(events, "validation/logloss")) == 2
    assert result.test is not None
    assert scalars(events, "test/ne") == pytest.approx([result.test.ne])


def test_a_diverged_run_keeps_its_events_so_far(tmp_path: Path) -> None:
    with pytest.raises(DivergenceError) as diverged:
        train(
            ModelSpec(epochs=1, batch_size=256, dense_lr=10.0),
            DatasetRef(max_rows=3000),
            tensorboard_dir=tmp_path,
        )
    losses = scalars(tmp_path, "train/loss")
    # Every step before the diverged one, and none after.
    assert len(losses) == diverged.value.step - 1 >= 1


def job_spans(trace_file: Path, timeout_s: float = 120) -> list[dict[str, Any]]:
    """The spans a job process appended, once its "job" span is there (written at exit)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if trace_file.exists():
            spans = [json.loads(line) for line in trace_file.read_text().splitlines()]
            if any(s["name"] == "job" for s in spans):
                return spans
        time.sleep(0.2)
    raise AssertionError(f"no job span in {trace_file} after {timeout_s} s")


def test_a_jobs_spans_join_the_trace_of_its_launch(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REA_TRACE_FILE", "1")  # the job's telemetry settings are the worker's
    # Export spans soon after they end, not at exit (after the job's futile signal attempt).
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    runner = LocalProcessRunner(tmp_path, "127.0.0.1:1", "default")  # no signal: no server
    spec = tiny_spec("campaign-job", epochs=1)
    with trace.get_tracer("test").start_as_current_span("launch_job") as launch:
        runner.run(spec, attempt=1)

    spans = {s["name"]: s for s in job_spans(tmp_path / observability.TRACE_FILE)}

    context = launch.get_span_context()
    job, trained = spans["job"], spans["train"]
    assert (
        job["context"]["trace_id"]
        == trained["context"]["trace_id"]
        == (f"0x{context.trace_id:032x}")
    )
    assert job["parent_id"] == f"0x{context.span_id:016x}"
    assert trained["parent_id"] == job["context"]["span_id"]
    assert job["attributes"]["rea.hypothesis_ids"] == ["h-wider-embeddings"]
    assert (
        job["attributes"]["rea.state"] == "succeeded" and job["attributes"]["rea.device_hours"] > 0
    )
    assert scalars(tmp_path / "tensorboard" / "campaign-job" / "t1", "validation/ne")


def test_rea_tensorboard_prints_the_command_or_names_the_missing_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REA_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    folder = tmp_path / "tensorboard" / "campaign-1"

    missing = runner.invoke(app, ["tensorboard", "campaign-1"])
    assert missing.exit_code == 2
    assert "'campaign-1'" in missing.output and str(folder) in missing.output

    folder.mkdir(parents=True)
    found = runner.invoke(app, ["tensorboard", "campaign-1"])
    assert found.exit_code == 0, found.output
    assert found.output.strip().endswith(f"tensorboard --logdir {folder}")


def test_setup_exports_spans_and_metrics_to_the_configured_otlp_endpoint(tmp_path: Path) -> None:
    """``observability.setup`` in a process of its own (providers are per process), against a
    local OTLP/HTTP receiver that records what arrives."""
    received: list[str] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            received.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = (
        "from opentelemetry import trace\n"
        "import observability\n"
        "from activities import telemetry\n"
        "from settings import Settings\n"
        "assert observability.setup(Settings())\n"
        "with trace.get_tracer('t').start_as_current_span('s'): telemetry.TRIALS.add(1)\n"
        "observability.flush()\n"
    )
    env = {
        **os.environ,
        "REA_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "REA_DATA_DIR": str(tmp_path),
    }
    try:
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    finally:
        server.shutdown()
    assert sorted(set(received)) == ["/v1/metrics", "/v1/traces"]
