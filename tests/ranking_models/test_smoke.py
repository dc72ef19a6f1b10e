"""The preflight's data inspection and smoke step on MovieLens, synthetic and Criteo TSV data."""

import math
from pathlib import Path

import pytest
import torch

from contracts import DatasetRef, ModelSpec
from contracts.dataset import SyntheticSpec
from ranking_models import smoke, train_step
from ranking_models.data import Batch
from ranking_models.errors import BadDataError, BadSpecError, DivergenceError, OutOfMemoryError
from ranking_models.smoke import inspect_data, smoke_step

MOVIELENS = DatasetRef(max_rows=1000)
SYNTHETIC = DatasetRef(
    name="synthetic-criteo",
    synthetic=SyntheticSpec(rows=3000, cardinalities=(50, 20, 7), num_dense=3, block_rows=512),
)
MODEL = ModelSpec(embedding_dim=8, epochs=1)


def criteo_line(i: int) -> str:
    dense = [str(i % 17), str(i % 5), *["1"] * 11]
    cats = [format((i * 2654435761 + k) % 2**32, "08x") for k in range(26)]
    return "\t".join([str(int(i % 3 == 0)), *dense, *cats])


@pytest.mark.parametrize("dataset", [MOVIELENS, SYNTHETIC], ids=["movielens", "synthetic"])
def test_one_step_gives_the_untrained_models_loss_and_is_seeded(dataset: DatasetRef) -> None:
    loss = smoke_step(MODEL, dataset, rows=32, device="cpu")
    # An untrained model predicts near 0.5: its log loss is near ln 2.
    assert math.isfinite(loss) and 0.3 < loss < 1.5
    assert smoke_step(MODEL, dataset, rows=32, device="cpu") == loss


def test_the_step_trains_the_rows_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real = train_step.batch_loss

    def spy(net: torch.nn.Module, batch: Batch, *, step: int) -> tuple[torch.Tensor, float]:
        sizes.append(len(batch))
        return real(net, batch, step=step)

    monkeypatch.setattr(train_step, "batch_loss", spy)
    smoke_step(MODEL, SYNTHETIC, rows=16, device="cpu")
    assert sizes == [16]


def test_a_spec_that_cannot_be_built_is_a_bad_spec() -> None:
    with pytest.raises(BadSpecError, match="embedding_dim"):
        smoke_step(MODEL.model_copy(update={"embedding_dim": 30}), MOVIELENS, device="cpu")


def test_missing_data_is_bad_data_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(BadDataError, match=str(tmp_path / "ml-100k.inter")):
        smoke_step(MODEL, DatasetRef(path=str(tmp_path)), device="cpu")


def test_a_model_too_large_for_the_host_is_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REA_MEMORY_LIMIT_GB", "0.00001")
    with pytest.raises(OutOfMemoryError, match="REA_MEMORY_LIMIT_GB"):
        smoke_step(MODEL, MOVIELENS, device="cpu")


def test_a_loss_that_is_not_finite_is_divergence(monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_loss(net: torch.nn.Module, batch: Batch, *, step: int) -> tuple[torch.Tensor, float]:
        return torch.tensor(float("nan"), requires_grad=True), float("nan")

    monkeypatch.setattr(train_step, "batch_loss", nan_loss)
    with pytest.raises(DivergenceError, match="at step 1"):
        smoke_step(MODEL, MOVIELENS, device="cpu")


def test_a_cut_that_cannot_split_falls_back_to_the_data_as_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded: list[int] = []
    real = smoke.load_dataset

    def one_class_when_cut(ref: DatasetRef, *, max_table_rows: int) -> object:
        loaded.append(ref.max_rows)
        if ref.max_rows == smoke.SMOKE_ROWS:
            raise BadDataError("the validation split has only one class")
        return real(ref, max_table_rows=max_table_rows)

    monkeypatch.setattr(smoke, "load_dataset", one_class_when_cut)
    assert math.isfinite(smoke_step(MODEL, DatasetRef(max_rows=5000), device="cpu"))
    assert loaded == [smoke.SMOKE_ROWS, 5000]


def test_inspection_reports_rows_features_and_label_rate() -> None:
    summary = inspect_data(DatasetRef(max_rows=2000), MODEL)
    assert summary.rows == 2000
    assert summary.splits == {"train": 1600, "validation": 200, "test": 200}
    assert 0.0 < summary.label_rate < 1.0
    assert summary.describe().startswith("2,000 rows (train 1,600, validation 200, test 200)")
    assert "10 sparse and 4 dense features" in summary.describe()
    synthetic = inspect_data(SYNTHETIC, MODEL)
    assert synthetic.schema.sparse_features == ("C1", "C2", "C3") and synthetic.rows == 3000


def test_inspection_finds_a_day_file_cut_short_at_the_end_of_the_data(tmp_path: Path) -> None:
    # Four whole days, then a fifth cut in the middle of its tenth line (an interrupted
    # copy): only the last rows of the test split reach it.
    folder = tmp_path / "criteo"
    folder.mkdir()
    for day in range(4):
        lines = [criteo_line(day * 1000 + i) for i in range(1000)]
        (folder / f"day_{day}").write_text("\n".join(lines) + "\n")
    last = "\n".join(criteo_line(4000 + i) for i in range(10))
    (folder / "day_4").write_text(last[: -len(last.splitlines()[-1]) // 2])
    data = DatasetRef(name="criteo-tsv", path=str(folder))

    with pytest.raises(BadDataError, match="day_4 line 10"):
        inspect_data(data, MODEL)
    # Without the cut file the data is sound.
    whole = data.model_copy(update={"exclude_files": ["day_4"]})
    assert inspect_data(whole, MODEL).rows == 4000
