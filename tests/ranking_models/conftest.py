"""Trials here run on a fixed thread team: the automatic one follows the host's load and a
timing probe, and a team's size changes the floating-point sums (by ~1e-10 in NE), so two
runs of one spec would differ whenever the load did. ``test_threads`` unsets it to test the
automatic team."""

import pytest


@pytest.fixture(autouse=True)
def _fixed_trial_team(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REA_TRIAL_THREADS", "2")
