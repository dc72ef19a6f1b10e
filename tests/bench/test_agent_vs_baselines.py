"""Smoke test: the agent benchmark runs every method end to end on a tiny task (no gain asserted).

Plus the pieces whose mistakes would silently skew the comparison: the budget each searcher
gets, the baseline as the searchers' first move, gain orientation, openrea's choice.
"""

import json
from types import SimpleNamespace

import pytest

from activities.search import changes_from_params, search_distributions
from bench import agent_vs_baselines as bench
from bench.baselines import affordable_search, baseline_params
from bench.campaign import openrea_choice, openrea_search
from bench.records import KNOB_FIELDS, Bench
from bench.scoring import interval, ratio
from bench.tables import fmt_ratio, spend_lines
from bench.tasks import ROOT, load_tasks, quick_task, scaled
from bench.trials import reference
from contracts import LaunchProposal, ModelSpec, SearchSpace, relative_gain


def test_quick_run_compares_all_methods_at_equal_compute(tmp_path, capsys) -> None:
    figures = bench.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    runs = {r.method: r for r in figures["runs"]}
    assert set(runs) == set(bench.METHODS)
    budget = runs["openrea"].spent_device_hours
    assert budget > 0
    for method in ("random", "tpe"):
        run = runs[method]
        assert run.budget_device_hours == budget
        # They stop once they reach openrea's spend (their first trial, the baseline, may
        # alone reach it on a tiny task).
        assert run.spent_device_hours >= budget
        assert run.trials[0].changes == {} and run.trials[0].state == "succeeded"
    for run in runs.values():
        assert run.score is not None and len(run.score.gains) == 1
    saved = json.loads(figures["json"].read_text())
    assert {r["method"] for r in saved["runs"]} == set(bench.METHODS)
    assert saved["summary"]["all"]["methods"]["openrea"]["runs"] == 1
    assert figures["png"].stat().st_size > 0
    assert "ratio" in out and "target openrea >= 2x random" in out
    # Resumed, a finished run trains nothing again and keeps its numbers; other options are
    # refused by name.
    again = bench.main(["--quick", "--resume", "--out", str(tmp_path)])
    assert again["runs"] == figures["runs"]
    with pytest.raises(SystemExit, match="scoring_seeds"):
        bench.main(["--quick", "--resume", "--scoring-seeds", "2", "--out", str(tmp_path)])


def test_the_baseline_is_a_point_of_the_searched_space() -> None:
    space = SearchSpace(fields=KNOB_FIELDS)
    dists = search_distributions(space)
    baseline = ModelSpec(embedding_dim=8, dense_hidden=[16], over_hidden=[32], dense_lr=3e-4)
    params = baseline_params(baseline, dists)
    assert params is not None
    assert baseline.with_changes(changes_from_params(space, params)).changes_from(baseline) == {}
    outside = baseline.with_changes({"embedding_dim": 512})
    assert baseline_params(outside, dists) is None


def test_gain_is_positive_when_the_choice_is_better_on_either_orientation() -> None:
    assert relative_gain(0.81, 0.90, "ne") == pytest.approx(0.1)
    assert relative_gain(0.77, 0.70, "auc") == pytest.approx(0.1)
    assert relative_gain(0.99, 0.90, "ne") < 0


def test_ratio_and_interval_say_when_they_do_not_apply() -> None:
    assert ratio(0.02, 0.01) == 2.0
    assert ratio(0.02, 0.0) is None and fmt_ratio(None) == "n/a"
    assert interval([0.1]) is None
    low, high = interval([0.01, 0.02, 0.03])
    assert low < 0.02 < high


def test_seeds_below_three_need_quick() -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--seeds", "2"])
    assert bench.parse_args(["--quick"]).seeds == 1


def _result(proposal, best_model=None, protocol="evidence"):
    status = SimpleNamespace(
        proposal=proposal, protocol=protocol, phase="done", best_trial_id="v-x"
    )
    return SimpleNamespace(status=status, best_model=best_model)


def test_openrea_choice_is_its_launch_or_else_the_baseline() -> None:
    request = load_tasks(ROOT / "examples" / "tasks")[0].request
    base = request.baseline
    launch = LaunchProposal(verdict="launch", candidate="x", changes={"dropout": 0.2})
    spec, _ = openrea_choice(request, _result(launch))
    assert spec.changes_from(base) == {"dropout": 0.2}
    nothing = LaunchProposal(verdict="no launchable improvement")
    assert openrea_choice(request, _result(nothing))[0] == base
    assert openrea_choice(request, _result(None))[0] == base
    older = _result(None, best_model=base.with_changes({"dropout": 0.1}), protocol="single-seed")
    assert openrea_choice(request, older)[0].changes_from(base) == {"dropout": 0.1}


def test_only_picks_tasks_by_their_files_names_at_any_budget_scale() -> None:
    # `make bench-budgets` (--budget-scale 0.1 --only ...) once ran nothing: scaled tasks are
    # named "ml100k@x0.1", and --only compared those names.
    files = load_tasks(ROOT / "examples" / "tasks")
    every, tasks = bench.picked(files, ["ml100k", "synthetic-sgd"], 0.1)
    assert [t.name for t in tasks] == ["ml100k@x0.1", "synthetic-sgd@x0.1"]
    assert len(every) == len(files)
    assert tasks[0].request.budget.device_hours == pytest.approx(
        0.1 * next(f for f in files if f.name == "ml100k").request.budget.device_hours
    )
    with pytest.raises(SystemExit, match=r"no task named ml100m; the tasks are: .*ml100k"):
        bench.picked(files, ["ml100m"], 1.0)


def test_a_budget_the_preflight_refuses_is_recorded_and_given_to_the_searchers() -> None:
    # `make bench-budgets` once ended on the refused approval's error instead of recording it.
    task = scaled(quick_task(load_tasks(ROOT / "examples" / "tasks")[0]), 0.001)
    refused = openrea_search(Bench(), task, 0, lambda status: None)
    assert refused.refused and not refused.launched
    assert refused.spent_device_hours == 0.0 and refused.trials == [] and refused.choice == {}
    assert refused.note.startswith("refused: preflight failed: cost: estimated ")
    assert "approve at least" in refused.note
    assert "refused at preflight" in spend_lines([refused])[0]
    approved = task.request.budget.device_hours
    assert refused.planned_device_hours is not None and refused.planned_device_hours > approved
    # The searchers run with the budget openrea refused: what they find is what it gave up.
    assert bench.search_budget(Bench(), task, 0, refused, None) == approved


def test_the_affordable_random_search_draws_whole_space_points_that_finish() -> None:
    # Uniform draws over the whole box mostly cost hundreds of baseline trials, so plain
    # random search finishes two or three per budget; this one draws again nearer the
    # baseline until a draw costs at most COST_CAP baseline trials.
    task = quick_task(load_tasks(ROOT / "examples" / "tasks")[0])
    bench_ = Bench()
    budget = 8 * reference(bench_, task, 0).device_hours
    run = affordable_search(bench_, task, 0, budget, lambda spent: None)
    assert run.method == "random-affordable" and run.trials[0].changes == {}
    moves = run.trials[1:]
    assert len(moves) >= 3
    assert all(len(t.changes) >= 5 for t in moves)  # whole-space points, not one-knob probes
    # Only the last may be cut (by the budget); the rest finished with a value.
    assert all(t.state == "succeeded" and t.validation is not None for t in moves[:-1])
    assert run.spent_device_hours >= budget
    again = affordable_search(Bench(), task, 0, budget, lambda spent: None)
    assert [t.changes for t in again.trials[:3]] == [t.changes for t in run.trials[:3]]
