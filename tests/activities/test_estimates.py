"""The cost estimate corrected by past trials on the same data, and its stated source."""

from activities.estimates import HistoryCorrected
from contracts import DatasetRef, ModelSpec, TrialRecord, TrialResult, TrialSpec

DATA = DatasetRef(max_rows=3000)
BASE = ModelSpec(epochs=1)
WIDE = BASE.model_copy(update={"embedding_dim": 64})


def _record(
    model: ModelSpec, seconds: float, dataset: DatasetRef = DATA, **spec: object
) -> TrialRecord:
    trial = TrialSpec(
        campaign_id="c", trial_id=f"t{seconds}", phase="validation", model=model, dataset=dataset,
        **spec,
    )  # fmt: skip
    result = TrialResult(
        campaign_id="c", trial_id=trial.trial_id, state="succeeded", duration_s=seconds
    )
    return TrialRecord(spec=trial, result=result)


class History:
    def __init__(self, records: list[TrialRecord]) -> None:
        self.records = records

    def campaigns(self) -> list[str]:
        return ["c"]

    def trials(self, campaign_id: str) -> list[TrialRecord]:
        return self.records


def host(spec: ModelSpec, dataset: DatasetRef) -> tuple[float, float]:
    return (10.0, 12.0) if spec.embedding_dim == 64 else (2.0, 3.0)


def test_without_history_the_host_estimate_stands():
    estimate = HistoryCorrected(host, None)
    assert estimate(BASE, DATA) == (2.0, 3.0)
    assert estimate.source(BASE, DATA) == "timed steps and fixed costs on this host"


def test_trials_of_the_same_spec_scale_it_by_what_they_took():
    seeds = [BASE.model_copy(update={"seed": s}) for s in range(3)]
    history = History([_record(m, t) for m, t in zip(seeds, (4.0, 5.0, 6.0), strict=True)])
    estimate = HistoryCorrected(host, history)
    assert estimate(BASE, DATA) == (5.0, 9.0)  # median x2.5; high 3 s x the largest, 3
    assert "3 past trials of this spec" in estimate.source(BASE, DATA)


def test_similar_specs_on_the_same_data_scale_it_and_other_data_does_not():
    history = History(
        [_record(WIDE, t) for t in (20.0, 20.0, 30.0)]
        + [_record(BASE, 100.0, DatasetRef(max_rows=2000))]  # other data: ignored
        + [_record(BASE, 100.0, data_fraction=0.5)]  # a screening run: ignored
    )
    estimate = HistoryCorrected(host, history)
    typical, high = estimate(BASE, DATA)
    assert typical == 4.0 and high == 9.0  # x2 from the wide spec's own estimate; high x3
    assert "similar spec" in estimate.source(BASE, DATA)
