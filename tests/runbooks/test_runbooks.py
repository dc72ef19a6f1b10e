"""The runbooks as data: loading with clear errors, matching, remedy choice and demotion."""

from pathlib import Path

import pytest

from contracts import (
    DatasetRef,
    FailureReport,
    HalveBatchSize,
    ModelSpec,
    RemedyAttempt,
    TrialResult,
    TrialSpec,
)
from runbooks import NotApplicable, RunbookError, apply_remedy, choose, load_runbook, signature_of
from runbooks.loader import BUILTIN_DIR
from runbooks.matcher import DEMOTE_AFTER


def failure(error_type: str = "", error: str = "", state: str = "failed") -> TrialResult:
    return TrialResult(
        campaign_id="c", trial_id="v-x~r0", state=state, error=error, error_type=error_type
    )


def spec(**model: object) -> TrialSpec:
    return TrialSpec(
        campaign_id="c",
        trial_id="v-x~r0",
        phase="validation",
        arm="v-x",
        model=ModelSpec(**model),
        dataset=DatasetRef(max_rows=100),
    )


def report(result: TrialResult, tried: list[RemedyAttempt] | None = None, **model: object):
    return FailureReport(spec=spec(**model), result=result, tried=tried or [])


def tried(pattern: str, *remedies: object) -> list[RemedyAttempt]:
    return [
        RemedyAttempt(
            trial_id="v-x~r0",
            attempt=i + 1,
            pattern_id=pattern,
            remedy=r,
            run_trial_id=f"v-x~r0~r{i + 1}",
            state="failed",
        )
        for i, r in enumerate(remedies)
    ]


RUNBOOK = load_runbook()


def test_the_shipped_runbooks_cover_every_failure_class_the_issue_lists() -> None:
    ids = {e.id for e in RUNBOOK.entries}
    assert {
        "host-oom",
        "device-oom",
        "nan-loss",
        "loss-spike",
        "divergence",
        "job-lost",
        "worker-lost",
        "corrupt-shard",
        "missing-data",
        "schema-mismatch",
        "bad-spec",
        "kernel-unavailable",
    } <= ids
    # Narrower entries are tried first.
    order = [e.id for e in RUNBOOK.entries]
    assert order.index("device-oom") < order.index("host-oom")
    assert order.index("nan-loss") < order.index("divergence")


@pytest.mark.parametrize(
    ("result", "pattern", "kind"),
    [
        (failure("OutOfMemoryError", "out of host memory with batch_size=512"), "host-oom", "fp16_embeddings"),  # noqa: E501
        (failure("OutOfMemoryError", "out of device memory with batch_size=512: CUDA out of memory"), "device-oom", "halve_batch_size"),  # noqa: E501
        (failure("", "training diverged: loss is nan at step 3 (not finite)", "diverged"), "nan-loss", "lower_lr"),  # noqa: E501
        (failure("", "training diverged: loss is 460.8 at step 2 (above 100 x the reference loss 0.7058); lower dense_lr or sparse_lr, add lr_warmup_steps or grad_clip_norm", "diverged"), "loss-spike", "add_grad_clip"),  # noqa: E501
        (failure("", "training diverged: loss is 9.1 at step 40 (above 10 x the reference loss 0.7 for 20 steps); lower dense_lr or sparse_lr, add lr_warmup_steps or grad_clip_norm", "diverged"), "divergence", "lower_lr"),  # noqa: E501
        (failure("JobLost", "job c/v-x~r0/1 exited without a result"), "job-lost", "resume_from_checkpoint"),  # noqa: E501
        (failure("TimeoutError", "activity Heartbeat timeout"), "worker-lost", "retry_elsewhere"),
        (failure("KernelUnavailableError", "kernels unavailable on this host: No module named fbgemm_gpu"), "kernel-unavailable", "retry_elsewhere"),  # noqa: E501
    ],
)  # fmt: skip
def test_a_failure_matches_its_pattern_and_gets_its_first_remedy(
    result: TrialResult, pattern: str, kind: str
) -> None:
    diagnosis = choose(RUNBOOK, report(result), {})
    assert (diagnosis.pattern_id, diagnosis.source) == (pattern, "runbook")
    assert diagnosis.remedy is not None and diagnosis.remedy.kind == kind


@pytest.mark.parametrize(
    ("result", "pattern"),
    [
        (failure("BadDataError", "Criteo path /x does not exist; set DatasetRef.path"), "missing-data"),  # noqa: E501
        (failure("BadDataError", "MovieLens u.data line 4: rating 'x' is not a number"), "schema-mismatch"),  # noqa: E501
        (failure("BadSpecError", "ModelSpec.table_rows: features ['x'] are not in the dataset"), "bad-spec"),  # noqa: E501
        (failure("AccessDenied", "dataset path /etc is outside the campaign's read scope"), "access-denied"),  # noqa: E501
    ],
)  # fmt: skip
def test_failures_no_retry_can_fix_match_and_escalate_at_once(
    result: TrialResult, pattern: str
) -> None:
    diagnosis = choose(RUNBOOK, report(result), {})
    assert diagnosis.pattern_id == pattern and diagnosis.remedy is None
    assert "has no remedy" in diagnosis.why_escalate


def test_an_unknown_failure_matches_nothing() -> None:
    diagnosis = choose(RUNBOOK, report(failure("HasherCrash", "segfault")), {})
    assert diagnosis.source == "none" and diagnosis.remedy is None
    assert diagnosis.why_escalate == "no runbook entry matches HasherCrash"


def test_remedies_are_used_up_in_order_and_then_the_trial_escalates() -> None:
    oom = failure("OutOfMemoryError", "out of host memory")
    steps = []
    done: list[object] = []
    for _ in range(4):
        diagnosis = choose(RUNBOOK, report(oom, tried("host-oom", *done)), {})
        if diagnosis.remedy is None:
            steps.append(diagnosis.why_escalate)
            break
        steps.append(diagnosis.remedy.kind)
        done.append(diagnosis.remedy)
    assert steps == [
        "fp16_embeddings",
        "shrink_embeddings",
        "halve_batch_size",
        "runbook 'host-oom': 3 remedies tried, none worked",
    ]


def test_a_remedy_that_changes_nothing_is_passed_over() -> None:
    oom = failure("OutOfMemoryError", "out of host memory")
    diagnosis = choose(RUNBOOK, report(oom, embedding_precision="fp16"), {})
    assert diagnosis.remedy is not None and diagnosis.remedy.kind == "shrink_embeddings"
    assert diagnosis.model is not None and diagnosis.model.embedding_dim == 8


def test_a_remedy_that_keeps_failing_for_a_pattern_is_demoted() -> None:
    oom = failure("OutOfMemoryError", "out of host memory")
    stats = {("host-oom", "fp16_embeddings"): (DEMOTE_AFTER, 0)}
    diagnosis = choose(RUNBOOK, report(oom), stats)
    assert diagnosis.remedy is not None and diagnosis.remedy.kind == "shrink_embeddings"
    # Still tried, last.
    done = [diagnosis.remedy, HalveBatchSize()]
    last = choose(RUNBOOK, report(oom, tried("host-oom", *done)), stats)
    assert last.remedy is not None and last.remedy.kind == "fp16_embeddings"
    assert "demoted" in last.diagnosis
    # A remedy that works often enough keeps its place.
    fine = choose(RUNBOOK, report(oom), {("host-oom", "fp16_embeddings"): (DEMOTE_AFTER, 2)})
    assert fine.remedy is not None and fine.remedy.kind == "fp16_embeddings"


def test_skip_corrupt_shard_names_the_file_the_error_names(tmp_path: Path) -> None:
    (tmp_path / "day_0").write_text("")
    (tmp_path / "day_1").write_text("")
    data = DatasetRef(name="criteo-tsv", path=str(tmp_path))
    failed = spec().model_copy(update={"dataset": data})
    error = f"Criteo file {tmp_path / 'day_1'} line 77: expected 40 tab-separated fields, got 3"
    diagnosis = choose(
        RUNBOOK, FailureReport(spec=failed, result=failure("BadDataError", error)), {}
    )
    assert diagnosis.pattern_id == "corrupt-shard"
    assert diagnosis.dataset is not None and diagnosis.dataset.exclude_files == ("day_1",)
    with pytest.raises(NotApplicable):  # MovieLens has no shards
        apply_remedy(diagnosis.remedy, spec(), failure("BadDataError", error))  # type: ignore[arg-type]


def test_signatures_read_from_the_run() -> None:
    assert signature_of(failure("", "loss is inf at step 2 (not finite)", "diverged")) == "nan_loss"
    stalled = TrialResult(
        campaign_id="c", trial_id="t", state="succeeded", epoch_values=[0.9, 0.8, 0.81, 0.82, 0.8]
    )
    assert signature_of(stalled) == "stalled_validation"
    improving = stalled.model_copy(update={"epoch_values": [0.9, 0.8, 0.79, 0.78, 0.77]})
    assert signature_of(improving) is None


def test_a_malformed_entry_fails_naming_the_file_and_the_field(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        "id: my-oom\ntitle: x\nmatch: {error_types: [OutOfMemoryError]}\n"
        "remedies: [{kind: halve_batch_size}, {kind: double_the_gpus}]\n"
    )
    with pytest.raises(RunbookError) as err:
        load_runbook(tmp_path)
    assert str(tmp_path / "mine.yaml") in str(err.value) and "remedies.1" in str(err.value)

    (tmp_path / "mine.yaml").write_text("id: my-oom\ntitle: x\nmatch: {}\n")
    with pytest.raises(RunbookError, match=r"match: .*at least one of"):
        load_runbook(tmp_path)


def test_an_engineers_entry_replaces_a_shipped_one_only_with_a_higher_version(
    tmp_path: Path,
) -> None:
    shipped = (BUILTIN_DIR / "host-oom.yaml").read_text()
    (tmp_path / "host-oom.yaml").write_text(shipped)
    with pytest.raises(RunbookError, match="raise version"):
        load_runbook(tmp_path)
    (tmp_path / "host-oom.yaml").write_text(shipped.replace("version: 1", "version: 2"))
    entry = load_runbook(tmp_path).get("host-oom")
    assert entry is not None and entry.version == 2
