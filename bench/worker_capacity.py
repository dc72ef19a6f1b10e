"""Worker capacity: how many concurrent campaigns and trials one orchestration worker holds.

    python -m bench.worker_capacity [--quick] [--campaigns 1,5,20,50] [--trials 24]

For each number of concurrent campaigns, on a fresh dev server (SQLite, `rea up`'s tuned
config): ONE orchestration worker in its own process (the real CampaignWorkflow with the real
bookkeeping activities: record_trial into the insights database, the gate, the Optuna search,
diagnosis, notifications; planning and preflight are answered by trivial fakes), and the
job-control activities in a second process on the jobs queue. Trials run as
``local-process`` jobs that cost nothing: ``launch_job`` returns at once and, ``--job-seconds``
later, the "job" signals ``job_finished`` as a real job's process does; ``poll_job`` (the
workflow's slow fallback) reports the result once it is due. So only orchestration is
measured.

Prints per configuration: trials completed per minute, workflow-task latency (history event
timestamps, WorkflowTaskScheduled -> Completed), the orchestration worker's RSS (once the
campaigns wait for approval, and its peak, VmHWM), its and the dev server's CPU time per
trial, history events per trial (all runs of each campaign), the ``status`` query's JSON bytes
per trial and one TrialSummary's, the most runs (continue-as-new) of a campaign, and the jobs
that only the poll fallback found ("late": a job that ends before its campaign has seen its
launch is ignored as stale, so keep ``--job-seconds`` above the workflow-task latency).
Figures only, nothing asserted: all processes share this machine's cores, so throughput is a
floor for the worker, not its limit. The results are in docs/deploy.md.
"""

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

import devserver
from bench.capacity_workers import serve
from client import make_client
from contracts import ApproveInput, Budget, CampaignRequest, CampaignResult
from settings import Settings
from workflows.campaign import CampaignWorkflow

FULL_SWEEP = (1, 5, 20, 50)
QUICK_SWEEP = (1,)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---- the driver (the processes under test: bench/capacity_workers.py) ---------------------


@dataclass
class Figures:
    campaigns: int
    trials: int
    trials_per_min: float
    wft_p50_ms: float
    wft_p99_ms: float
    rss_idle_mib: float
    rss_peak_mib: float
    cpu_ms_per_trial: float
    server_cpu_ms_per_trial: float
    events_per_trial: float
    status_bytes_per_trial: float
    summary_bytes: float
    runs: int
    late_jobs: int


def proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    # Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def dev_server_pid() -> int:
    """The dev server's pid: this process's child running ``temporal server start-dev``."""
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"start-dev" in cmdline:
                return int(pid)
    raise RuntimeError("no dev server among this process's children")


async def spawn(
    role: str, args: argparse.Namespace, settings: Settings, queue: str, log: Path
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.worker_capacity",
        "--serve",
        role,
        "--address",
        settings.temporal_address,
        "--data-dir",
        str(settings.data_dir),
        "--queue",
        queue,
        "--trials",
        str(args.trials),
        "--job-seconds",
        str(args.job_seconds),
        stdout=asyncio.subprocess.PIPE,
        stderr=log.open("w"),
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)
    except TimeoutError:
        line = b""
    if line.strip() != b"ready":
        process.kill()
        raise RuntimeError(f"{role} worker did not start:\n{log.read_text()[-3000:]}")
    return process


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


async def run_campaign(client: Client, queue: str, trials: int, parallel: int) -> WorkflowHandle:
    request = CampaignRequest(
        execution="local-process",
        budget=Budget(device_hours=1000.0, max_parallel_trials=parallel, max_trials=trials),
        approvers=["bench"],
        max_hypotheses=trials - 1,
        # A fixed number of trials: the fixed-size protocol (a screen sizes to a budget).
        protocol="evidence",
    )
    handle = await client.start_workflow(
        CampaignWorkflow.run, request, id=f"capacity-{uuid.uuid4()}", task_queue=queue
    )
    while (await handle.query(CampaignWorkflow.status)).phase != "awaiting_approval":
        await asyncio.sleep(0.2)
    return handle


async def history_figures(client: Client, handle: WorkflowHandle) -> tuple[int, list[float], int]:
    """Events over all runs of a campaign, its workflow tasks' latencies (seconds), its runs."""
    events = runs = 0
    latencies: list[float] = []
    run_id: str | None = handle.first_execution_run_id or handle.result_run_id
    while run_id:
        runs += 1
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        scheduled: dict[int, float] = {}
        run_id = None
        for event in history.events:
            events += 1
            at = event.event_time.ToDatetime().timestamp()
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                scheduled[event.event_id] = at
            elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                attrs = event.workflow_task_completed_event_attributes
                latencies.append(at - scheduled[attrs.scheduled_event_id])
            elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                run_id = (
                    event.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                )
    return events, latencies, runs


def steady_rate(ended: list[datetime], elapsed: float) -> float:
    """Trials ended per minute between the 10th and the 90th percentile of their end times.

    The middle of the run: neither the start nor a few stragglers (a job found by the slow
    poll fallback) count. Few trials: all of them over the whole run."""
    times = sorted(e.timestamp() for e in ended)
    if len(times) < 20:
        return len(times) / elapsed * 60
    low, high = int(len(times) * 0.1), int(len(times) * 0.9)
    return (high - low) / max(times[high] - times[low], 1e-9) * 60


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def measure(args: argparse.Namespace, campaigns: int, root: Path) -> Figures:
    settings = Settings(
        temporal_address=f"127.0.0.1:{devserver.free_port()}",
        ui_port=devserver.free_port(),
        data_dir=root / f"c{campaigns}",
    )
    settings.data_dir.mkdir(parents=True)
    server = devserver.DevServer(settings, log=settings.data_dir / "server.log")
    server.start()
    queue = f"capacity-{uuid.uuid4()}"
    processes = []
    try:
        client = await make_client(settings)
        orchestration = await spawn(
            "orchestration", args, settings, queue, settings.data_dir / "orchestration.log"
        )
        processes.append(orchestration)
        processes.append(await spawn("jobs", args, settings, queue, settings.data_dir / "jobs.log"))
        pid = orchestration.pid
        handles = await asyncio.gather(
            *(run_campaign(client, queue, args.trials, args.parallel) for _ in range(campaigns))
        )
        rss_idle = proc_status_kib(pid, "VmRSS")
        server_pid = dev_server_pid()
        cpu_before, server_cpu_before = cpu_seconds(pid), cpu_seconds(server_pid)
        started = time.monotonic()
        await asyncio.gather(
            *(
                h.execute_update(CampaignWorkflow.approve, ApproveInput(approver="bench"))
                for h in handles
            )
        )
        results: list[CampaignResult] = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(pid) - cpu_before
        server_cpu = cpu_seconds(server_pid) - server_cpu_before
        rss_peak = proc_status_kib(pid, "VmHWM")
        statuses = [await h.query(CampaignWorkflow.status) for h in handles]
        histories = [await history_figures(client, h) for h in handles]
    finally:
        for process in processes:
            await stop(process)
        server.stop()
    summaries = [t for r in results for t in r.status.trials]
    trials = len(summaries)
    latencies = [x for _, lat, _ in histories for x in lat]
    late = (settings.data_dir / "jobs.log").read_text().count("late: ")
    return Figures(
        campaigns=campaigns,
        trials=trials,
        trials_per_min=steady_rate([t.ended_at for t in summaries if t.ended_at], elapsed),
        wft_p50_ms=percentile(latencies, 50) * 1000,
        wft_p99_ms=percentile(latencies, 99) * 1000,
        rss_idle_mib=rss_idle / 1024,
        rss_peak_mib=rss_peak / 1024,
        cpu_ms_per_trial=cpu / max(trials, 1) * 1000,
        server_cpu_ms_per_trial=server_cpu / max(trials, 1) * 1000,
        events_per_trial=sum(n for n, _, _ in histories) / max(trials, 1),
        status_bytes_per_trial=sum(len(s.model_dump_json().encode()) for s in statuses)
        / max(trials, 1),
        summary_bytes=statistics.fmean(len(t.model_dump_json().encode()) for t in summaries),
        runs=max(runs for _, _, runs in histories),
        late_jobs=late,
    )


HEADER = (
    f"{'campaigns':>9}{'trials':>8}{'trials/min':>12}{'wft p50':>10}{'wft p99':>10}"
    f"{'RSS idle':>10}{'RSS peak':>10}{'CPU/trial':>11}{'server CPU':>12}{'events/trial':>14}"
    f"{'status B/trial':>16}{'summary B':>11}{'runs':>6}{'late':>6}"
)


def row(f: Figures) -> str:
    return (
        f"{f.campaigns:>9}{f.trials:>8}{f.trials_per_min:>12.0f}{f.wft_p50_ms:>8.1f}ms"
        f"{f.wft_p99_ms:>8.1f}ms{f.rss_idle_mib:>7.0f}MiB{f.rss_peak_mib:>7.0f}MiB"
        f"{f.cpu_ms_per_trial:>9.1f}ms{f.server_cpu_ms_per_trial:>10.1f}ms"
        f"{f.events_per_trial:>14.1f}"
        f"{f.status_bytes_per_trial:>16.0f}{f.summary_bytes:>11.0f}{f.runs:>6}{f.late_jobs:>6}"
    )


async def main(argv: list[str] | None = None) -> list[Figures]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="One campaign, few trials.")
    parser.add_argument(
        "--campaigns", default=None, help="Comma-separated sweep (default 1,5,20,50)."
    )
    parser.add_argument("--trials", type=int, default=None, help="Trials per campaign.")
    parser.add_argument("--parallel", type=int, default=4, help="Trials at once per campaign.")
    parser.add_argument(
        "--job-seconds", type=float, default=None, help="Each job's duration (default 5, quick 1)."
    )
    parser.add_argument("--serve", choices=("orchestration", "jobs"), help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trials is None:
        args.trials = 8 if args.quick else 24
    if args.job_seconds is None:
        # Longer than the workflow-task latency at 50 campaigns (p99 under 5 s here): a job
        # that ends before its campaign has seen its launch is only found by the slow poll.
        args.job_seconds = 1.0 if args.quick else 5.0
    if args.serve:
        await serve(args)
        return []
    sweep = (
        tuple(int(n) for n in args.campaigns.split(","))
        if args.campaigns
        else (QUICK_SWEEP if args.quick else FULL_SWEEP)
    )
    print(
        f"{args.trials} trials per campaign, {args.parallel} at once, "
        f"jobs of {args.job_seconds:g} s; one orchestration worker process"
    )
    print(HEADER, flush=True)
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for campaigns in sweep:
            figures.append(await measure(args, campaigns, Path(tmp)))
            print(row(figures[-1]), flush=True)
    print(
        "wft: workflow task scheduled -> completed; RSS: the orchestration worker's VmRSS "
        "before approval and its peak (VmHWM); CPU/trial: its user+system time (server CPU: the "
        "dev server's); late: jobs "
        "found by the poll fallback instead of their signal; trials/min: ends per minute between "
        "the 10th and 90th percentile end; summary B: one TrialSummary's JSON; runs: a "
        "campaign's runs (continue-as-new), the most of any"
    )
    return figures


if __name__ == "__main__":
    asyncio.run(main())
