"""bench.cost_model: how far the planner's cost ratios are from what the benchmark's trials
measured (no training: it reads a benchmark's JSON)."""

import json
import math

import pytest

from bench import cost_model
from bench.tasks import ROOT, load_tasks, quick_task, seeded
from ranking_models.tasks import STEP_OVERHEAD_WORK, relative_cost


def test_it_measures_the_model_s_error_against_what_trials_cost(tmp_path, capsys) -> None:
    # Two trials that cost e^0.5 times what the model (with the step's fixed part) predicts
    # over their run's baseline: log(predicted / measured) is -0.5 for both, rms 0.5.
    task = quick_task(load_tasks(ROOT / "examples" / "tasks")[0])
    request = seeded(task.request, 1)
    changes = [{"batch_size": request.baseline.batch_size // 2}, {"embedding_dim": 16}]
    trials = [{"changes": {}, "state": "succeeded", "device_hours": 2.0}]
    for change in changes:
        model = request.baseline.with_changes(change)
        predicted = relative_cost(request.baseline, model, request.dataset)
        trials.append(
            {"changes": change, "state": "succeeded", "device_hours": 2.0 * predicted * math.e**0.5}
        )
    trials.append({"changes": {"epochs": 3}, "state": "cut", "device_hours": 9.0})  # unscored
    payload = {
        "settings": {"requests": {task.name: task.request.model_dump(mode="json")}},
        "runs": [
            {"task": task.name, "method": "random", "seed": 1, "trials": trials},
            {"task": task.name, "method": "openrea", "seed": 1, "trials": trials},  # no specs
        ],
    }
    path = tmp_path / "agent_vs_baselines.json"
    path.write_text(json.dumps(payload))

    summary = cost_model.main([str(path)])

    assert summary["with the step"] == pytest.approx(0.5)
    assert summary["best fit"] <= summary["with the step"] + 1e-9
    assert summary["FLOPs only"] != pytest.approx(0.5)  # halving the batch costs nothing
    out = capsys.readouterr().out
    assert "2 finished searcher trials" in out
    assert f"{STEP_OVERHEAD_WORK:.3g}" in out
