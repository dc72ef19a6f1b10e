"""Smoke test: the capacity benchmark runs one campaign end to end (no timing asserted)."""

from bench import worker_capacity


async def test_benchmark_measures_one_campaign(capsys) -> None:  # type: ignore[no-untyped-def]
    [figures] = await worker_capacity.main(["--quick"])
    assert figures.campaigns == 1 and figures.trials > 0 and figures.runs >= 1
    for value in (
        figures.trials_per_min,
        figures.wft_p50_ms,
        figures.rss_peak_mib,
        figures.cpu_ms_per_trial,
        figures.events_per_trial,
        figures.status_bytes_per_trial,
        figures.summary_bytes,
    ):
        assert value > 0
    assert figures.wft_p99_ms >= figures.wft_p50_ms
    assert figures.rss_peak_mib >= figures.rss_idle_mib
    assert "trials/min" in capsys.readouterr().out
