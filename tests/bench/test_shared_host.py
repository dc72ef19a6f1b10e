"""Smoke test: the shared-host benchmark runs every cell and judges them (no timing asserted)."""

from bench import shared_host


def test_verdicts_compare_auto_with_the_best_fixed_setting_and_two_slots_with_one():
    rates = {
        (1, "idle", "auto"): 100.0, (1, "idle", "fixed 1"): 110.0,
        (1, "loaded", "auto"): 50.0, (1, "loaded", "fixed 1"): 70.0,
        (2, "idle", "auto"): 90.0, (2, "idle", "fixed 1"): 90.0,
        (2, "loaded", "auto"): 60.0, (2, "loaded", "fixed 1"): 60.0,
    }  # fmt: skip
    failures = shared_host.verdicts(rates)
    assert failures == [
        "1 slot(s) loaded: auto 50/h, best fixed 70/h",
        "idle: 2 slots 90/h < 1 slot 100/h",
    ]
    assert shared_host.settings(2) == {
        "auto": {},
        "fixed 1": {"REA_TRIAL_THREADS": "1"},
        "fixed 2": {"REA_TRIAL_THREADS": "2"},
        "fixed 2 passive": {"REA_TRIAL_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    }


def test_benchmark_runs_both_conditions_and_prints_the_ratios(capsys):
    rates = shared_host.main(
        ["--trials", "1", "--hogs", "1", "--max-rows", "3000", "--slots", "1", "--limit-s", "120",
         "--settings", "auto", "fixed 1"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert {(1, c, "auto") for c in shared_host.CONDITIONS} <= set(rates)
    assert all(v > 0 for v in rates.values())
    assert "loaded / idle" in out and "best fixed" in out
