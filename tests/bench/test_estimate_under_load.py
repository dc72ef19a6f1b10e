"""Smoke test: the estimate-under-load benchmark runs both conditions (no timing asserted)."""

from bench import estimate_under_load


def test_benchmark_measures_idle_and_loaded_and_prints_the_ratio(capsys):
    figures = estimate_under_load.main(["--rounds", "1", "--hogs", "1", "--max-rows", "3000"])
    out = capsys.readouterr().out
    for condition in estimate_under_load.CONDITIONS:
        assert 0 < figures[f"{condition}_low_s"] <= figures[f"{condition}_high_s"]
        assert condition in out
    assert figures["ratio"] > 0 and figures["swing"] >= 1
    assert "loaded / idle" in out
