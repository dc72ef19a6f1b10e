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
