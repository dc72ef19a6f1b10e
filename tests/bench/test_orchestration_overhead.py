"""Smoke test: the orchestration benchmark runs on two dev servers (no timing asserted)."""

from bench import orchestration_overhead


async def test_benchmark_measures_both_servers(capsys) -> None:  # type: ignore[no-untyped-def]
    figures = await orchestration_overhead.main(["--trials", "8", "--rounds", "1"])
    for name in ("tuned", "default"):
        assert (
            figures[f"{name}_p50_ms"] > 0 and figures[f"{name}_p99_ms"] >= figures[f"{name}_p50_ms"]
        )
    assert "share of a 60 s trial" in capsys.readouterr().out
