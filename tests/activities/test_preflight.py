"""The preflight checklist with the real checks (MovieLens, TorchRec), and the access scope
the training and job activities enforce."""

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.access import check_read, check_write
from activities.preflight import PreflightActivities, production_ports
from contracts import (
    AccessScope,
    Budget,
    DatasetRef,
    Hypothesis,
    PhasePlan,
    Plan,
    PreflightInput,
    PreflightReport,
)
from tests.factories import campaign_request

PORTS = production_ports()


def plan(*hypotheses: Hypothesis, per_trial: float = 0.001) -> Plan:
    return Plan(
        hypotheses=list(hypotheses),
        phases=[PhasePlan(phase="validation", trials=3, estimated_device_hours=3 * per_trial)],
        estimated_device_hours_per_trial=per_trial,
    )


def check(tmp_path: Path, the_plan: Plan | None = None, **request: object) -> PreflightReport:
    activities = PreflightActivities(PORTS, tmp_path)
    inp = PreflightInput(
        campaign_id="c", request=campaign_request(**request), plan=the_plan or plan()
    )
    return ActivityEnvironment().run(activities.preflight_campaign, inp)


def items(report: PreflightReport) -> dict[str, tuple[bool, str]]:
    return {i.check: (i.ok, i.detail) for i in report.items}


WIDER = Hypothesis(id="wider", title="dim 32", changes={"embedding_dim": 32})


def test_a_sound_plan_passes_every_check_with_figures(tmp_path: Path) -> None:
    report = check(tmp_path, plan(WIDER))
    assert [i.check for i in report.items] == [
        "data", "specs", "smoke_step", "memory", "cost", "access",
    ]  # fmt: skip
    assert report.passed, report.summary()
    found = items(report)
    assert "3,000 rows" in found["data"][1]
    assert "the baseline and 1 hypotheses build" in found["specs"][1]
    assert "loss" in found["smoke_step"][1]
    assert "GiB" in found["memory"][1] and "device-hours" in found["cost"][1]
    assert str(tmp_path.resolve()) in found["access"][1]


def test_a_broken_dataset_path_fails_data_and_the_rest_still_report(tmp_path: Path) -> None:
    missing = DatasetRef(name="criteo-tsv", path=str(tmp_path / "nowhere"))
    report = check(tmp_path, plan(WIDER), dataset=missing)
    found = items(report)
    assert found["data"] == (False, found["data"][1]) and "does not exist" in found["data"][1]
    assert found["smoke_step"] == (False, "not run: the data failed")
    assert found["specs"][0] and "without the data's schema" in found["specs"][1]
    assert found["cost"][0] and found["access"][0]
    assert "preflight failed: data:" in report.summary()


def test_a_hypothesis_that_cannot_be_built_is_named(tmp_path: Path) -> None:
    bad_dim = Hypothesis(id="odd-dim", title="x", changes={"embedding_dim": 30})
    bad_table = Hypothesis(id="no-such-table", title="x", changes={"table_rows": {"nope": 8}})
    found = items(check(tmp_path, plan(bad_dim, bad_table)))
    ok, detail = found["specs"]
    assert not ok and "odd-dim: embedding_dim" in detail and "no-such-table: " in detail


def test_a_plan_over_its_budget_or_unmeasured_fails_cost(tmp_path: Path) -> None:
    over = items(check(tmp_path, plan(per_trial=1.0), budget=Budget(device_hours=0.5)))
    assert over["cost"] == (False, "estimated up to 3 of 0.5 device-hours")
    unmeasured = items(check(tmp_path, plan(per_trial=0.0)))
    assert not unmeasured["cost"][0] and "not measured" in unmeasured["cost"][1]


def test_memory_fails_on_a_small_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REA_MEMORY_LIMIT_GB", "0.0001")
    ok, detail = items(check(tmp_path, plan(WIDER)))["memory"]
    assert not ok and "too large: baseline, wider" in detail


def test_a_dataset_outside_the_read_scope_fails_access(tmp_path: Path) -> None:
    data = DatasetRef(path=str(tmp_path / "ml"))
    found = items(check(tmp_path, access=AccessScope(read=["/srv/data"]), dataset=data))
    assert not found["access"][0]


def test_activities_refuse_reading_or_writing_outside_the_scope(tmp_path: Path) -> None:
    scope = AccessScope(read=[str(tmp_path / "data")], write=[str(tmp_path / "out")])
    check_read(scope, DatasetRef(path=str(tmp_path / "data" / "ml-100k")))
    check_write(scope, tmp_path / "out" / "checkpoints", tmp_path)
    with pytest.raises(ApplicationError) as denied:
        check_read(scope, DatasetRef(path="/etc"))
    assert denied.value.type == "AccessDenied" and denied.value.non_retryable
    assert "/etc" in str(denied.value) and "CampaignRequest.access.read" in str(denied.value)
    with pytest.raises(ApplicationError, match="write scope"):
        check_write(scope, tmp_path / "elsewhere", tmp_path)
    # Without a scope (trials of older versions) nothing is refused; without an explicit
    # one, the dataset's own path and the data dir are the scope.
    check_read(None, DatasetRef(path="/etc"))
    check_write(AccessScope(), tmp_path / "checkpoints", tmp_path)
    with pytest.raises(ApplicationError):
        check_write(AccessScope(), Path("/var/tmp/x"), tmp_path)
