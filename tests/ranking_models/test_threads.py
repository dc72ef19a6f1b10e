"""The trial thread budget: its share of the cores, less what other processes keep busy."""

import subprocess
import sys
import threading
import time

import pytest
import torch

from ranking_models import threads


def test_the_team_is_the_share_less_the_cores_others_keep_busy():
    assert threads.share(cores=8, slots=2) == 4 and threads.share(cores=2, slots=4) == 1
    assert threads.threads_for(2, 2, None) == 2  # no /proc/stat: the share
    assert threads.threads_for(2, 2, 0.3) == 2  # light neighbours leave the cores
    assert threads.threads_for(2, 2, 0.6) == 1  # one busy neighbour takes a core
    assert threads.threads_for(2, 2, 2.0) == 1  # never below one thread
    assert threads.threads_for(4, 8, 5.0) == 3


def test_rea_trial_threads_fixes_the_count(monkeypatch):
    monkeypatch.setenv("REA_TRIAL_THREADS", "1")
    threads.configure(slots=1)
    result = {}

    def trial():
        team = threads.TrialThreads()
        team.recheck()
        result["threads"] = torch.get_num_threads()
        result["stop"] = team.polling(lambda: True)()

    worker = threading.Thread(target=trial)
    worker.start()
    worker.join()
    assert result == {"threads": 1, "stop": True}
    monkeypatch.setenv("REA_TRIAL_THREADS", "two")
    with pytest.raises(ValueError, match="REA_TRIAL_THREADS: expected a whole number"):
        threads.fixed_threads()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_host_load_sees_a_busy_neighbour_and_not_this_process():
    load = threads.HostLoad()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # this process's own work is not "others"
        pass
    own = load.others()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        load.others()
        time.sleep(0.5)
        busy = load.others()
    finally:
        hog.kill()
        hog.wait()
    assert own is not None and busy is not None
    assert busy > own - 0.5 and busy >= 0.5  # the neighbour's core shows (other load adds)


def _probe_with(seconds_per_step: dict[int, float], start: int, most: int) -> threads.TeamProbe:
    """Runs a probe against a clock where a step at team size n takes seconds_per_step[n]."""
    probe, now, size = threads.TeamProbe(start, most), 0.0, start
    for _ in range(200):
        size = probe.step(now)
        now += seconds_per_step[size]
        if probe.decided:
            break
    assert probe.decided
    return probe


def test_the_probe_keeps_a_smaller_team_only_where_it_steps_faster():
    small_model = _probe_with({4: 0.010, 2: 0.006, 1: 0.005}, start=4, most=4)
    assert small_model.cap == 1  # each halving paid
    big_model = _probe_with({4: 0.030, 2: 0.055, 1: 0.100}, start=4, most=4)
    assert big_model.cap == 4 and big_model.step(1.0) == 4
    noise = _probe_with({2: 0.0100, 1: 0.0098}, start=2, most=2)
    assert noise.cap == 2  # within the margin: not worth a smaller team
    middle = _probe_with({4: 0.010, 2: 0.005, 1: 0.008}, start=4, most=4)
    assert middle.cap == 2


def test_a_team_started_small_for_a_neighbour_may_still_grow():
    assert threads.TeamProbe(1, most=2).cap == 2  # nothing to probe at one thread
    probe = _probe_with({2: 0.010, 1: 0.010}, start=2, most=4)
    assert probe.cap == 4 and probe.step(1.0) == 2  # stays at its start until the load allows


def test_one_long_interval_does_not_decide():
    probe, now = threads.TeamProbe(2, 2), 0.0
    for k in range(40):
        size = probe.step(now)
        # at two threads one step is slow (validation at an epoch's end); the rest fast
        now += 0.5 if (size == 2 and k == 6) else (0.004 if size == 2 else 0.008)
    assert probe.decided and probe.cap == 2


def test_choose_probes_before_training_or_takes_a_resumed_trials_cap(monkeypatch):
    monkeypatch.delenv("REA_TRIAL_THREADS", raising=False)
    threads.configure(slots=1)
    result: dict[str, object] = {}

    def trial() -> None:
        team = threads.TrialThreads()
        calls = []
        result["resumed"] = team.choose(lambda: calls.append(1), known=1), len(calls)
        torch.set_num_threads(team.share)
        result["probed"] = team.choose(lambda: calls.append(1)), len(calls)

    worker = threading.Thread(target=trial)
    worker.start()
    worker.join()
    assert result["resumed"] == (1, 0)  # a checkpoint's cap: no probe
    cap, passes = result["probed"]  # type: ignore[misc]
    assert 1 <= cap <= threads.host_cores()
    # One thread decides at once; more run warm-up and timed passes at each size tried.
    least = 0 if threads.share() == 1 else threads.PROBE_WARMUP + threads.PROBE_STEPS
    assert passes >= least
