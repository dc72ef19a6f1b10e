"""Which data a trial trains on and how it is cut."""

from typing import Literal

from pydantic import Field, model_validator

from contracts.base import Spec

# Criteo Kaggle display-ads: distinct values of each of the 26 categorical features
# (the table sizes of the reference DLRM's Kaggle run), most to least frequent feature
# order as in the file.
CRITEO_KAGGLE_CARDINALITIES: tuple[int, ...] = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip


class SyntheticSpec(Spec):
    """A synthetic Criteo-like click task with a planted ground-truth click model.

    Every row is a function of ``seed`` and its row number only, generated in blocks of
    ``block_rows`` rows, so any block can be regenerated on its own and the splits never
    move when other fields (``rows``, fractions) change.

    The click logit is ``bias + main + crosses + dense + noise``: ``main`` sums one hashed
    weight per (feature, id); each cross multiplies low-rank hashed id embeddings of
    ``cross_order`` features (order 2 is what DLRM's dot interaction can express, higher
    orders are beyond it); ``dense`` is a sum of tanh bumps of the log-scaled dense
    features; ``noise`` is Gaussian. ``bias`` is calibrated so that the mean click rate
    is ``label_rate``.

    Attributes:
        rows: Rows in the whole dataset (train + validation + test).
        num_dense: Dense features (Criteo: 13), log-normal counts seen as log(1 + x).
        cardinalities: Distinct ids of each sparse feature; their number is F. The
            default is Criteo Kaggle's 26 features.
        zipf_exponent: Id frequencies follow rank^-zipf_exponent within each feature.
        main_weight: Standard deviation of the per-id main effects' total.
        num_crosses: How many planted feature crosses (0 = none).
        cross_order: Features in each cross.
        cross_rank: Width of the hashed id embeddings multiplied in a cross.
        cross_weight: Standard deviation of the crosses' total.
        dense_weight: Standard deviation of the dense nonlinearity's total.
        noise: Standard deviation of Gaussian noise added to the logit (irreducible).
        label_rate: Target share of clicks.
        seed: Seeds the planted model and every row.
        block_rows: Rows per generated block, the unit of streaming and regeneration.
    """

    rows: int = Field(default=1_000_000, ge=3)
    num_dense: int = Field(default=13, ge=0, le=1024)
    cardinalities: tuple[int, ...] = Field(
        default=CRITEO_KAGGLE_CARDINALITIES, min_length=1, max_length=1024
    )
    zipf_exponent: float = Field(default=1.1, gt=0.0, le=4.0)
    main_weight: float = Field(default=1.0, ge=0.0)
    num_crosses: int = Field(default=8, ge=0, le=1024)
    cross_order: int = Field(default=2, ge=2, le=8)
    cross_rank: int = Field(default=4, ge=1, le=64)
    cross_weight: float = Field(default=1.0, ge=0.0)
    dense_weight: float = Field(default=0.5, ge=0.0)
    noise: float = Field(default=0.5, ge=0.0)
    label_rate: float = Field(default=0.25, gt=0.0, lt=1.0)
    seed: int = Field(default=0, ge=0, lt=2**63)
    block_rows: int = Field(default=65_536, ge=1, le=4_194_304)

    @model_validator(mode="after")
    def _consistent(self) -> "SyntheticSpec":
        if any(c < 1 for c in self.cardinalities):
            raise ValueError(
                f"cardinalities: every feature needs at least 1 id, got {self.cardinalities}"
            )
        if self.num_crosses > 0 and self.cross_order > len(self.cardinalities):
            raise ValueError(
                f"cross_order: {self.cross_order} exceeds the {len(self.cardinalities)} "
                "sparse features (len(cardinalities)); lower cross_order or add features"
            )
        return self


class DatasetRef(Spec):
    """A dataset and how to cut it.

    Splits are fixed and cut in time order where there is time: train (oldest), then
    validation (for model selection), then test (newest; only the trainer's final report
    reads it, never selection).

    Attributes:
        name: The dataset. ``movielens-100k`` is MovieLens-100k turned into a CTR task
            (label = rating >= 4), split by timestamp. ``synthetic-criteo`` is generated
            from ``synthetic``, split by row-number ranges. ``criteo-tsv`` reads Criteo's
            TSV files (Kaggle ``train.txt`` or the 1TB ``day_N`` files) at ``path``,
            split by file order, then line order.
        path: MovieLens: folder holding the raw files; empty means the copy shipped in
            the ``recbole`` wheel. Criteo: one TSV file, or a folder of ``day_N`` files
            (required). Unused for synthetic data.
        max_rows: Keep only the first ``max_rows`` rows in time (0 = all). Small values
            make tiny, fast runs for tests.
        validation_fraction: Share of the newest rows (before the test rows) used for
            validation and model selection.
        test_fraction: Share of the newest rows held out for the final report; never used
            for selection.
        synthetic: The generator's parameters, for ``synthetic-criteo`` only.
        exclude_files: Criteo ``day_N`` file names of the folder at ``path`` to leave out
            (e.g. a corrupt shard a runbook skipped).
    """

    name: Literal["movielens-100k", "synthetic-criteo", "criteo-tsv"] = "movielens-100k"
    path: str = ""
    max_rows: int = Field(default=0, ge=0)
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    synthetic: SyntheticSpec = Field(default_factory=SyntheticSpec)
    exclude_files: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _fields_fit_the_name(self) -> "DatasetRef":
        if self.name == "criteo-tsv" and not self.path:
            raise ValueError(
                "path: criteo-tsv needs path set to a Criteo TSV file (e.g. train.txt) or "
                "a folder of day_N files"
            )
        # Compared with the default, not checked for presence: a dumped and re-read ref
        # (as Temporal's converter does) always carries the field.
        if self.name != "synthetic-criteo" and self.synthetic != SyntheticSpec():
            raise ValueError(
                f"synthetic: only used with name='synthetic-criteo', got name={self.name!r}; "
                "drop synthetic or set name='synthetic-criteo'"
            )
        return self
