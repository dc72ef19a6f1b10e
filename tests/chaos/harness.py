"""The real stack for chaos tests: ports, `rea worker` processes, campaigns, job processes.

Fixtures built on these live in ``conftest.py``; the helpers are imported by the tests.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client, WorkflowHandle

from contracts import ApproveInput, CampaignRequest, CampaignStatus
from settings import Settings
from tests.factories import APPROVER
from workflows.campaign import CampaignWorkflow
from workflows.options import ORCHESTRATION_QUEUE


class Worker:
    """`rea worker` as its own process, so that it can be SIGKILLed like a crashed host."""

    def __init__(
        self, settings: Settings, training_slots: int = 1, env: dict[str, str] | None = None
    ) -> None:
        self._env = os.environ | {
            "REA_TEMPORAL_ADDRESS": settings.temporal_address,
            "REA_DATA_DIR": str(settings.data_dir),
            "REA_TRAINING_SLOTS": str(training_slots),
            **(env or {}),
        }
        self._log = (settings.data_dir / "worker.log").open("ab")
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        rea = Path(sys.executable).parent / "rea"
        return subprocess.Popen(
            [str(rea), "worker"], env=self._env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def kill_and_restart(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = self._spawn()

    def restart_if_exited(self) -> bool:
        """Start a new worker if this one has exited on its own, as a supervisor (systemd,
        Kubernetes) would: `rea worker` exits when no server answers as it starts."""
        if self.process.poll() is None:
            return False
        self.process = self._spawn()
        return True

    async def restart_once_dead(self, timeout_s: float = 180) -> int:
        """Wait for a fault injected into the worker to kill it; start a new one. Returns the
        dead one's exit status."""
        returncode = await asyncio.to_thread(self.process.wait, timeout_s)
        self.process = self._spawn()
        return returncode

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


async def start_approved(
    client: Client, request: CampaignRequest, planning_timeout_s: float = 240
) -> WorkflowHandle:
    """Start a campaign and approve its plan once planning (and the preflight checklist) has
    finished."""
    handle = await client.start_workflow(
        CampaignWorkflow.run,
        request,
        id=f"chaos-{uuid.uuid4()}",
        task_queue=ORCHESTRATION_QUEUE,
    )
    await until(handle, lambda s: s.phase == "awaiting_approval", planning_timeout_s)
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    return handle


async def until(
    handle: WorkflowHandle, done: Callable[..., bool], timeout_s: float = 240
) -> CampaignStatus:
    """Poll the status query until ``done(status)``; survives a server that is restarting."""
    last = "no status"
    for _ in range(int(timeout_s / 0.25)):
        try:
            status = await handle.query(CampaignWorkflow.status)
            if done(status):
                return status
            last = f"phase {status.phase}: {status.message}"
        except Exception as err:  # the server or every worker may be down for a moment
            last = f"no status: {err}"
        await asyncio.sleep(0.25)
    raise AssertionError(f"condition not reached in {timeout_s:.0f} s ({last})")


# ---- job processes (execution "local-process"), seen from outside ----------------------------


@dataclass(frozen=True)
class JobProcess:
    """One launch of a trial's job: its folder ``jobs/<campaign>/<trial>/attempt-<n>`` and the
    process (pid and start time: together they name one process, whatever reuses the pid)."""

    folder: Path
    pid: int
    start_ticks: int

    @property
    def trial_id(self) -> str:
        return self.folder.parent.name

    @property
    def attempt(self) -> int:
        return int(self.folder.name.removeprefix("attempt-"))


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot); None once it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def age_s(job: JobProcess) -> float:
    """How long ``job``'s process has run (its start time against the host's uptime)."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - job.start_ticks / os.sysconf("SC_CLK_TCK")


def running_jobs(settings: Settings, campaign_id: str) -> list[JobProcess]:
    """The campaign's launched jobs whose process lives and has written no result yet."""
    running = []
    for pid_file in sorted((settings.data_dir / "jobs" / campaign_id).glob("*/attempt-*/pid")):
        folder = pid_file.parent
        try:
            launched = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            continue
        job = JobProcess(folder.resolve(), launched["pid"], launched["start_ticks"])
        if not (folder / "result.json").exists() and start_ticks(job.pid) == job.start_ticks:
            running.append(job)
    return running


def job_processes(settings: Settings, campaign_id: str) -> set[JobProcess]:
    """Every live process running one of the campaign's jobs, found by its command line
    (``python -m activities.job_entry FOLDER``), whether or not a pid file names it."""
    jobs = (settings.data_dir / "jobs" / campaign_id).resolve()
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"activities.job_entry" not in argv or len(argv) < 2:
            continue
        folder = Path(os.fsdecode(argv[argv.index(b"activities.job_entry") + 1]))
        ticks = start_ticks(int(proc.name))
        if folder.parent.parent == jobs and ticks is not None:
            found.add(JobProcess(folder, int(proc.name), ticks))
    return found


def kill_job(job: JobProcess) -> bool:
    """SIGKILL a job's process, as a host would lose it: no result, no signal. False when it
    had already gone."""
    if start_ticks(job.pid) != job.start_ticks:
        return False
    os.kill(job.pid, signal.SIGKILL)
    return True
