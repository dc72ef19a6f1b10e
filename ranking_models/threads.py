"""Each trial's CPU thread budget, so trials and their neighbours do not stall each other.

Torch runs every parallel op on a team of intra-op (OpenMP) threads that meet at a
barrier at the op's end, spinning on their cores while they wait. When the team has more
threads than there are free cores (two trials of two threads on two cores, or one trial
beside any CPU-bound process), a thread the scheduler put aside holds up the whole team at
every op: a 1.7 s MovieLens trial took 4.5 to 58.8 s beside one CPU-bound process, and
1.7-1.9 s with one thread.

So a trial's team is sized, in the trial's own thread, before its first op:

* its share: the host's cores (those this process may run on) divided by the worker's
  training slots (``configure``), or ``REA_TRIAL_THREADS`` when set;
* less the cores other processes keep busy, measured from ``/proc/stat`` less this
  process's own CPU time, again every ``RECHECK_S`` while it trains, so a neighbour that
  comes or goes mid-trial changes the team within a second (at least one thread).

* and no larger than pays: a small model's ops are too short for a team to pay for its
  barriers (a one-epoch MovieLens trial ran 2.14x its trials per hour on one thread of an
  idle 2-core host), and which models are small depends on the host. So before its first
  step a trial measures it (``TeamProbe`` over forward passes of one batch, which change
  nothing): a few passes at the team, a few at half of it, halving while that runs faster;
  the fastest is the team's cap for the whole trial. The cap is checkpointed, so a resumed
  trial steps with the cap the interrupted one had, not a fresh probe's.

A team's size changes the floating-point sums (by ~1e-10 in NE), so a trial is bit-for-bit
reproducible only with a fixed team (``REA_TRIAL_THREADS``): an automatic one follows the
host's load and the probe's timings.

The wait policy is left as OpenMP's default (spin, then sleep): with the team sized to the
free cores, spinning costs nothing, and ``OMP_WAIT_POLICY=PASSIVE`` made the idle 2-thread
trial 1.5x slower (``bench/shared_host.py`` measures it beside the others).
"""

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

# Seconds between two looks at the host's load while a trial trains.
RECHECK_S = 0.5
# Cores kept for a neighbour once it uses this much of one: a neighbour at 60% of a core
# already stalls a team that counts on that core.
BUSY_CORE = 0.6
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def host_cores() -> int:
    """The cores this process may run on (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class _Config:
    slots: int = 1
    fixed: int | None = None  # None: REA_TRIAL_THREADS, read when a trial starts


_CONFIG = _Config()


def configure(*, slots: int = 1, fixed: int | None = None) -> None:
    """Sets how many trials this process runs at once, and an explicit thread count.

    Args:
        slots: Trials running at once in this process (a training worker's slots).
        fixed: Threads per trial; 0: automatic; None: ``REA_TRIAL_THREADS`` (unset: 0).
    """
    _CONFIG.slots = max(1, slots)
    _CONFIG.fixed = None if fixed is None else max(0, fixed)


def fixed_threads() -> int:
    """``REA_TRIAL_THREADS`` as a count (0: automatic)."""
    text = os.environ.get("REA_TRIAL_THREADS", "").strip()
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"REA_TRIAL_THREADS: expected a whole number of threads, got {text!r}")
    return int(text)


def share(cores: int | None = None, slots: int | None = None) -> int:
    """A trial's share of the host: its cores divided by the slots, at least one."""
    return max(1, (cores or host_cores()) // (slots or _CONFIG.slots))


class HostLoad:
    """Cores other processes kept busy since the last look (``/proc/stat`` less this
    process's CPU time); None where ``/proc/stat`` is not readable."""

    def __init__(self) -> None:
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", "rb") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy_s = (sum(fields[:8]) - idle) / _CLOCK_TICKS  # guest time is inside user
        own = os.times()
        return time.monotonic(), busy_s, own.user + own.system

    def age(self) -> float | None:
        """Seconds since the last look (None: no ``/proc/stat``)."""
        return None if self._last is None else time.monotonic() - self._last[0]

    def others(self) -> float | None:
        """Busy cores of other processes, averaged since the previous call."""
        now, last = self._sample(), self._last
        if now is None or last is None or now[0] - last[0] < 0.05:
            return None
        self._last = now
        wall = now[0] - last[0]
        return max(0.0, (now[1] - last[1]) - (now[2] - last[2])) / wall


# The shortest and longest windows a trial's first look at the host may average over.
FIRST_LOOK_S = (0.1, 5.0)
_FIRST_LOOK = threading.Lock()
_PROCESS_LOAD: "HostLoad | None" = None


def first_look() -> float | None:
    """Busy cores of other processes just before a trial starts.

    Averaged since the previous trial's first look (or this module's import: the data
    loading before a first trial) when that window is between ``FIRST_LOOK_S``; else over a
    fresh window of the shortest length (the trial waits that long).
    """
    global _PROCESS_LOAD
    with _FIRST_LOOK:
        load = _PROCESS_LOAD
        age = load.age() if load is not None else None
        if load is None or age is None or age > FIRST_LOOK_S[1]:
            load = _PROCESS_LOAD = HostLoad()
            age = 0.0
        if age < FIRST_LOOK_S[0]:
            time.sleep(FIRST_LOOK_S[0] - age)
        return load.others()


def threads_for(share_: int, cores: int, others: float | None) -> int:
    """The team size: the share, less the cores that others keep busy (at least one)."""
    if others is None:
        return share_
    free = cores - int(others + (1.0 - BUSY_CORE))  # a core counts busy from BUSY_CORE
    return max(1, min(share_, free))


# The team probe: steps to skip first (allocation, the first batches), steps timed per team
# size, and how much faster a smaller team must step to be kept (below it, timing noise).
PROBE_WARMUP = 3
PROBE_STEPS = 8
PROBE_MARGIN = 0.05


class TeamProbe:
    """Finds the team size that runs a repeated pass fastest: ``start``, then halving while
    the half runs faster by ``PROBE_MARGIN``. Pure: ``step(now)`` takes the clock, once before
    every pass, and returns the size to run it at.

    A pass's time is the median interval between calls, so one long interval (the scheduler
    putting the process aside) does not decide.
    """

    def __init__(self, start: int, most: int) -> None:
        self.start = self.size = max(1, start)
        self.most = max(most, self.start)
        self.best: tuple[float, int] | None = None  # (seconds per step, size)
        self.decided = self.size == 1
        self._calls = 0
        self._last: float | None = None
        self._intervals: list[float] = []

    @property
    def cap(self) -> int:
        """The largest team worth having: a smaller one measured faster, else ``most`` (a
        team that started small for a neighbour may grow when the neighbour goes)."""
        if not self.decided:
            return self.size
        if self.best is not None and self.best[1] < self.start:
            return self.best[1]
        return self.most

    def step(self, now: float) -> int:
        if self.decided:
            return min(self.cap, self.start)
        self._calls += 1
        if self._last is not None and self._calls > PROBE_WARMUP + 1:
            self._intervals.append(now - self._last)
        self._last = now
        if len(self._intervals) < PROBE_STEPS:
            return self.size
        per_step = sorted(self._intervals)[len(self._intervals) // 2]
        self._intervals = []
        if self.best is None or per_step < (1 - PROBE_MARGIN) * self.best[0]:
            self.best = (per_step, self.size)
            if self.size > 1:
                self.size //= 2  # try half; its first interval spans the change, so skip it
                self._calls = PROBE_WARMUP
                return self.size
        self.decided = True
        return min(self.cap, self.start)


class TrialThreads:
    """Sizes the calling thread's intra-op team for one trial and keeps it sized.

    Create it in the thread that trains; call ``recheck`` often (it looks at the host
    every ``RECHECK_S`` only). With ``REA_TRIAL_THREADS`` (or ``configure(fixed=...)``) the
    count is that, and never changes.
    """

    def __init__(self) -> None:
        self.cores = host_cores()
        self.fixed = fixed_threads() if _CONFIG.fixed is None else _CONFIG.fixed
        self.share = self.fixed or share(self.cores)
        self.used: set[int] = set()
        # Sized before the first op: a team too large for the free cores stalls from the
        # first step (the neighbour is there before the trial, typically).
        self._set(self.fixed or threads_for(self.share, self.cores, first_look()))
        self._load = HostLoad()
        self._next = time.monotonic() + RECHECK_S
        self.cap = self.fixed or self.share

    def choose(self, forward: Callable[[], object], known: int = 0) -> int:
        """Caps the team at the size that runs ``forward`` fastest (``TeamProbe``), or at
        ``known`` (a resumed trial's cap, from its checkpoint). ``forward`` must change
        nothing (a forward pass without gradients, in eval mode). Returns the cap."""
        if self.fixed:
            return self.fixed
        if known:
            self.cap = known
        else:
            probe = TeamProbe(torch.get_num_threads(), self.share)
            while not probe.decided:
                self._set(probe.step(time.monotonic()))
                forward()
            self.cap = probe.cap
        self._set(min(self.cap, threads_for(self.share, self.cores, self._load.others())))
        return self.cap

    def _set(self, count: int) -> None:
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)
        self.used.add(count)

    def recheck(self) -> None:
        """Resizes the team to the free cores (at most ``cap``), at most every ``RECHECK_S``."""
        if self.fixed or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + RECHECK_S
        self._set(min(self.cap, threads_for(self.share, self.cores, self._load.others())))

    def polling(self, should_stop: Callable[[], bool] | None) -> Callable[[], bool]:
        """``should_stop`` (polled before every step) that also rechecks the team."""

        def poll() -> bool:
            self.recheck()
            return should_stop is not None and should_stop()

        return poll


_PROCESS_LOAD = HostLoad()  # the first trial's first look averages since import
