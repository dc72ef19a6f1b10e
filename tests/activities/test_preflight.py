"""The preflight checklist with the real checks (MovieLens, TorchRec), its independence of
items with fake ports, and the access scope the training and job activities enforce."""

import os
from dataclasses import replace
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.access import check_read, check_write, readable_paths, writable_paths
from activities.preflight import Ports, PreflightActivities, production_ports
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
from ranking_models.errors import BadDataError, DivergenceError
from tests.factories import campaign_request

PORTS = production_ports()
CHECKS = ["data", "specs", "smoke_step", "memory", "cost", "access"]


def plan(*hypotheses: Hypothesis, per_trial: float = 0.001, high: float = 0.0) -> Plan:
    return Plan(
        hypotheses=list(hypotheses),
        phases=[PhasePlan(phase="validation", trials=3, estimated_device_hours=3 * per_trial)],
        estimated_device_hours_per_trial=per_trial,
        estimated_device_hours_per_trial_high=high,
    )


def check(
    tmp_path: Path, the_plan: Plan | None = None, ports: Ports = PORTS, **request: object
) -> PreflightReport:
    activities = PreflightActivities(ports, tmp_path)
    inp = PreflightInput(
        campaign_id="c", request=campaign_request(**request), plan=the_plan or plan()
    )
    return ActivityEnvironment().run(activities.preflight_campaign, inp)


def items(report: PreflightReport) -> dict[str, tuple[bool, str]]:
    return {i.check: (i.ok, i.detail) for i in report.items}


WIDER = Hypothesis(id="wider", title="dim 32", changes={"embedding_dim": 32})


def test_a_sound_plan_passes_every_check_with_figures(tmp_path: Path) -> None:
    env = ActivityEnvironment()
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    inp = PreflightInput(campaign_id="c", request=campaign_request(), plan=plan(WIDER))

    report = env.run(PreflightActivities(PORTS, tmp_path).preflight_campaign, inp)

    assert [i.check for i in report.items] == CHECKS
    assert beats == CHECKS  # a heartbeat after each item
    assert report.passed, report.summary()
    assert report.summary() == "preflight passed (6 checks)"
    found = items(report)
    assert found["data"][1].startswith("3,000 rows (train 2,400, validation 300, test 300)")
    assert found["specs"][1] == "the baseline and 1 hypotheses build"
    assert "one training step of the baseline on 64 rows: loss" in found["smoke_step"][1]
    assert "largest: wider needs" in found["memory"][1] and "GiB limit" in found["memory"][1]
    assert found["cost"][1] == "estimated 0.003 of 100 device-hours"
    assert found["access"][1] == (
        "reads ['generated or shipped data only'] (the dataset's own path); "
        f"writes {[str(tmp_path.resolve())]} (the worker's data dir)"
    )
    assert all(not i.fix for i in report.items)


def test_a_missing_criteo_path_fails_data_and_the_rest_still_report(tmp_path: Path) -> None:
    missing = DatasetRef(name="criteo-tsv", path=str(tmp_path / "nowhere"))
    odd = Hypothesis(id="odd-dim", title="x", changes={"embedding_dim": 30})
    report = check(tmp_path, plan(WIDER, odd), dataset=missing)
    found = items(report)
    assert [i.check for i in report.items] == CHECKS
    assert not found["data"][0] and "does not exist" in found["data"][1]
    assert report.items[0].fix.startswith("fix the data or DatasetRef.path")
    assert found["smoke_step"] == (False, "not run: the data failed")
    assert found["memory"] == (False, "not estimated: the data failed")
    # What can be checked without the data still is: the specs (less their schema), the
    # cost and the access scope.
    ok, detail = found["specs"]
    assert not ok and "odd-dim: embedding_dim: Input should be a multiple of 4" in detail
    assert "wider" not in detail and "without the data's schema" in detail
    assert found["cost"][0] and found["access"][0]
    assert str(tmp_path / "nowhere") in found["access"][1]
    assert report.summary().startswith("preflight failed: data: Criteo path")


def test_movielens_pointed_at_an_empty_folder_fails_data(tmp_path: Path) -> None:
    empty = tmp_path / "ml-100k"
    empty.mkdir()
    found = items(check(tmp_path, dataset=DatasetRef(path=str(empty))))
    ok, detail = found["data"]
    assert not ok and f"MovieLens file {empty / 'ml-100k.inter'} does not exist" in detail
    assert found["smoke_step"][1] == "not run: the data failed"
    assert found["specs"][0] and found["cost"][0] and found["access"][0]


def test_hypotheses_that_cannot_be_built_are_named_with_their_field(tmp_path: Path) -> None:
    bad_dim = Hypothesis(id="odd-dim", title="x", changes={"embedding_dim": 30})
    bad_table = Hypothesis(id="no-such-table", title="x", changes={"table_rows": {"nope": 8}})
    typo = Hypothesis(id="typo", title="x", changes={"embedding_dimension": 32})
    negative = Hypothesis(id="negative", title="x", changes={"dense_lr": -1.0})
    report = check(tmp_path, plan(WIDER, bad_dim, bad_table, typo, negative))
    ok, detail = items(report)["specs"]
    assert not ok and detail.startswith("4 of 6 specs do not build: ")
    assert "odd-dim: embedding_dim: Input should be a multiple of 4" in detail
    assert "no-such-table: ModelSpec.table_rows: features ['nope']" in detail
    assert "typo: embedding_dimension: Extra inputs are not permitted" in detail
    assert "negative: dense_lr: " in detail and "wider" not in detail
    assert "revise the plan" in report.items[1].fix
    # The rest is checked on the specs that build.
    assert items(report)["memory"][0] and "largest: wider" in items(report)["memory"][1]


def test_a_plan_over_its_budget_or_unmeasured_fails_cost(tmp_path: Path) -> None:
    over = check(tmp_path, plan(per_trial=1.0), budget=Budget(device_hours=0.5))
    assert items(over)["cost"] == (False, "estimated 3 of 0.5 device-hours")
    assert over.items[4].fix.startswith("approve at least 3 device-hours (`--hours H`)")
    # The high end of the estimate's range must fit, not only the typical cost.
    ranged = check(tmp_path, plan(per_trial=0.1, high=0.2), budget=Budget(device_hours=0.5))
    assert items(ranged)["cost"] == (False, "estimated 0.3 to 0.6 of 0.5 device-hours")
    assert "approve at least 0.6 device-hours" in ranged.items[4].fix
    # A revision's own budget counts over the request's.
    revised = plan(per_trial=1.0).model_copy(update={"budget_device_hours": 5.0})
    assert items(check(tmp_path, revised, budget=Budget(device_hours=0.5)))["cost"][0]
    unmeasured = items(check(tmp_path, plan(per_trial=0.0)))
    assert not unmeasured["cost"][0] and "not measured" in unmeasured["cost"][1]


def test_memory_fails_on_a_small_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REA_MEMORY_LIMIT_GB", "0.0001")
    report = check(tmp_path, plan(WIDER))
    ok, detail = items(report)["memory"]
    assert not ok and "too large: baseline, wider" in detail
    assert "0.0001 GiB limit" in detail and "run on a larger host" in report.items[3].fix
    # The smoke step refuses to build a model that cannot fit, rather than swap.
    assert not items(report)["smoke_step"][0]


def test_a_dataset_outside_the_read_scope_fails_access(tmp_path: Path) -> None:
    ml = tmp_path / "ml"
    scope = AccessScope(read=[str(tmp_path / "allowed")], write=[str(tmp_path / "out")])
    report = check(tmp_path, access=scope, dataset=DatasetRef(path=str(ml)))
    ok, detail = items(report)["access"]
    assert not ok and f"dataset path {ml} is outside the read scope" in detail
    assert f"reads {[str(tmp_path / 'allowed')]}" in detail
    assert f"writes {[str(tmp_path / 'out')]}" in detail
    assert report.items[5].fix == f"add {ml} to CampaignRequest.access.read"


def fake_ports(**changes: object) -> Ports:
    """The real ports on MovieLens, with some replaced."""
    return replace(PORTS, **changes)  # type: ignore[arg-type]


def test_a_failing_smoke_step_leaves_the_other_items_alone(tmp_path: Path) -> None:
    def diverging(*args: object) -> float:
        raise DivergenceError(1, float("nan"))

    report = check(tmp_path, plan(WIDER), ports=fake_ports(smoke_step=diverging))
    found = items(report)
    assert [c for c, (ok, _) in found.items() if not ok] == ["smoke_step"]
    assert "training diverged: loss is nan at step 1" in found["smoke_step"][1]
    assert report.items[2].fix


def test_an_unexpected_error_propagates(tmp_path: Path) -> None:
    def broken(*args: object) -> float:
        raise RuntimeError("a bug, not the data")

    with pytest.raises(RuntimeError, match="a bug"):
        check(tmp_path, ports=fake_ports(smoke_step=broken))


def test_data_errors_from_the_inspection_port_fail_data(tmp_path: Path) -> None:
    def truncated(*args: object) -> object:
        raise BadDataError("Criteo file day_3 line 10: 12 fields, expected 40")

    found = items(check(tmp_path, ports=fake_ports(inspect_data=truncated)))
    assert found["data"] == (False, "Criteo file day_3 line 10: 12 fields, expected 40")


def test_the_effective_scope_defaults_to_the_datasets_path_and_the_data_dir(
    tmp_path: Path,
) -> None:
    data = DatasetRef(path=str(tmp_path / "ml"))
    assert readable_paths(AccessScope(), data) == [(tmp_path / "ml").resolve()]
    assert readable_paths(AccessScope(), DatasetRef()) == []
    assert readable_paths(AccessScope(read=["/srv/data"]), data) == [Path("/srv/data")]
    assert writable_paths(AccessScope(), tmp_path) == [tmp_path.resolve()]
    assert writable_paths(AccessScope(write=["/srv/out"]), tmp_path) == [Path("/srv/out")]


def test_activities_refuse_reading_or_writing_outside_the_scope(tmp_path: Path) -> None:
    scope = AccessScope(read=[str(tmp_path / "data")], write=[str(tmp_path / "out")])
    check_read(scope, DatasetRef(path=str(tmp_path / "data" / "ml-100k")))
    check_read(scope, DatasetRef(path=str(tmp_path / "data")))
    check_read(scope, DatasetRef())  # the shipped MovieLens reads no user path
    check_write(scope, tmp_path / "out" / "checkpoints", tmp_path)
    with pytest.raises(ApplicationError) as denied:
        check_read(scope, DatasetRef(path="/etc"))
    assert denied.value.type == "AccessDenied" and denied.value.non_retryable
    message = str(denied.value)
    assert "/etc" in message and str(tmp_path / "data") in message
    assert "add it to CampaignRequest.access.read" in message
    # A sibling whose name starts like the scope is not inside it.
    with pytest.raises(ApplicationError):
        check_read(scope, DatasetRef(path=str(tmp_path / "data2")))
    with pytest.raises(ApplicationError, match="write scope") as denied:
        check_write(scope, tmp_path / "elsewhere", tmp_path)
    assert denied.value.non_retryable and "CampaignRequest.access.write" in str(denied.value)
    # Without a scope (trials of older versions) nothing is refused; without an explicit
    # one, the dataset's own path and the data dir are the scope.
    check_read(None, DatasetRef(path="/etc"))
    check_write(None, Path("/var/tmp/x"), tmp_path)
    check_read(AccessScope(), DatasetRef(path="/etc"))
    check_write(AccessScope(), tmp_path / "checkpoints", tmp_path)
    with pytest.raises(ApplicationError):
        check_write(AccessScope(), Path("/var/tmp/x"), tmp_path)


def test_links_and_dot_dots_cannot_lead_out_of_the_scope(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", tmp_path / "data" / "link")
    scope = AccessScope(read=[str(tmp_path / "data")])
    for path in (tmp_path / "data" / "link", tmp_path / "data" / ".." / "secret"):
        with pytest.raises(ApplicationError, match="outside the campaign's read scope"):
            check_read(scope, DatasetRef(path=str(path)))
