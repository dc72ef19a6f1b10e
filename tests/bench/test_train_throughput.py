"""Smoke test: the throughput benchmark runs end to end at toy sizes (no timing asserted)."""

from bench import step_profile, train_throughput


def test_benchmark_runs_and_prints_every_path(capsys):
    figures = train_throughput.main(
        [
            "--tables", "3", "--rows", "64", "--dim", "8", "--batch", "32",
            "--dense-hidden", "8", "--over-hidden", "8", "--batches", "2",
            "--warmup", "1", "--iters", "1", "--rounds", "2", "--threads", "1",
            "--copy-mb", "4",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    for path in train_throughput.PATHS:
        assert figures[f"{path}_samples_per_s"] > 0
        assert path in out
    assert figures["ceiling_samples_per_s"] > 0
    assert figures["fused_vs_plain"] > 0 and figures["fused_vs_ceiling"] > 0
    assert "vs ceiling" in out
    assert "fused step by part" in out
    for part in ("embedding fwd", "interaction", "top MLP", "dense optimizer"):
        assert part in out


def test_the_profile_puts_the_step_in_its_parts():
    problem = train_throughput.Problem(
        num_dense=4, tables=3, rows=64, dim=8, batch=64, dense_hidden=[16], over_hidden=[16]
    )
    schema, batches = train_throughput.make_batches(problem, 2)
    step, model = train_throughput.make_step("fused", problem, schema, batches)
    ms = step_profile.breakdown(step, model, steps=3)
    assert set(ms) == set(step_profile.PARTS)
    # Each arch was seen, and the named parts carry most of the step.
    for part in ("embedding fwd", "bottom MLP", "top MLP", "interaction", "loss"):
        assert ms[part] > 0, (part, ms)
    assert ms["other"] < 0.5 * sum(ms.values()), ms


def test_flop_and_byte_counts():
    problem = train_throughput.Problem(
        num_dense=13, tables=26, rows=10, dim=64, batch=8, dense_hidden=[512, 256],
        over_hidden=[512, 256],
    )  # fmt: skip
    assert problem.interaction_width == 64 + 27 * 26 // 2
    mlp = 13 * 512 + 512 * 256 + 256 * 64 + 415 * 512 + 512 * 256 + 256
    assert problem.dense_flops() == 6 * (mlp + 27 * 27 * 64)
    assert problem.embedding_bytes() == 26 * 64 * 16
