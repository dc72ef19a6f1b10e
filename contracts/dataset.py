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


TEXT_FORMATS = ("csv", "tsv")


class TableColumns(Spec):
    """What each column of a table is for. Columns not named here are ignored.

    Attributes:
        label: The 0/1 click column (integer, boolean or 0.0/1.0 floats; no missing values).
        dense: Numeric feature columns, in model order. Missing (null, NaN, empty text)
            reads as 0; an infinite value is an error.
        sparse: Categorical id columns, one id per row (integers or strings), hashed into
            ``ModelSpec.max_table_rows`` rows per feature. Missing reads as an empty bag.
        multi: Multi-valued id columns (e.g. recently clicked item ids): a Parquet list
            column, or text with ids between ``TableSpec.separator``; hashed like
            ``sparse``, each row's first ``TableSpec.max_bag`` ids kept.
    """

    label: str = Field(min_length=1)
    dense: tuple[str, ...] = ()
    sparse: tuple[str, ...] = ()
    multi: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _distinct(self) -> "TableColumns":
        names = [self.label, *self.dense, *self.sparse, *self.multi]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"columns: {repeated} named in more than one role; give each one")
        if not self.sparse and not self.multi:
            raise ValueError("columns: a DLRM needs at least one sparse or multi id column")
        return self

    @property
    def features(self) -> tuple[str, ...]:
        """The sparse features in model (KJT key) order: ``sparse``, then ``multi``."""
        return (*self.sparse, *self.multi)


class TableSpec(Spec):
    """Your own table: its format, its columns' roles and how to split it.

    Attributes:
        format: ``parquet``, or delimited text: ``csv`` (comma) or ``tsv`` (tab).
        columns: Each column's role.
        header: Text only: the first line of each file names the columns.
        names: Text without a header: every column's name, in file order.
        delimiter: Text only: between fields; empty means the format's (``,`` or tab).
        separator: Between the ids of a text-valued ``multi`` column.
        max_bag: Ids kept per row of a ``multi`` column (the first ones).
        dense_transform: ``log1p`` maps a count x to log(1 + max(x, 0)); ``none`` keeps it.
        hex_ids: Text ids are hexadecimal numbers (Criteo's), hashed as numbers.
        split_column: Split by this column's values instead of by row order, e.g. a day:
            its distinct values are sorted, and the latest ones (whole values, about
            ``test_fraction`` of the rows) are test, the ones before them validation, so
            test is later than train.
        validation_values: With ``split_column``: exactly these values are validation
            (written as text, e.g. ``"2024-05-06"`` or ``"6"``); empty: by fraction.
        test_values: Likewise for test.
    """

    format: Literal["parquet", "csv", "tsv"] = "parquet"
    columns: TableColumns
    header: bool = True
    names: tuple[str, ...] = ()
    delimiter: str = Field(default="", max_length=1)
    separator: str = Field(default="|", min_length=1, max_length=1)
    max_bag: int = Field(default=64, ge=1, le=4096)
    dense_transform: Literal["none", "log1p"] = "none"
    hex_ids: bool = False
    split_column: str = ""
    validation_values: tuple[str, ...] = ()
    test_values: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> "TableSpec":
        if self.format == "parquet" and (self.names or not self.header or self.delimiter):
            raise ValueError(
                "names/header/delimiter: only for csv or tsv; Parquet files carry their "
                "column names"
            )
        if self.format in TEXT_FORMATS and not self.header and not self.names:
            raise ValueError("names: a text file without a header needs every column's name")
        if self.split_column and self.split_column in self.columns.features:
            raise ValueError(
                f"split_column: {self.split_column!r} is also a feature; a model must not "
                "learn the split (use another column or drop it from the features)"
            )
        if (self.validation_values or self.test_values) and not self.split_column:
            raise ValueError("validation_values/test_values: need split_column set")
        if bool(self.validation_values) != bool(self.test_values):
            raise ValueError("validation_values/test_values: give both, or neither (by fraction)")
        if set(self.validation_values) & set(self.test_values):
            raise ValueError("validation_values/test_values: a value cannot be in both")
        return self

    @property
    def field_delimiter(self) -> str:
        """The delimiter text fields are cut at."""
        return self.delimiter or ("\t" if self.format == "tsv" else ",")


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
            split by file order, then line order (a preset of ``table``). ``table``
            reads your own Parquet, CSV or TSV files at ``path`` as ``table`` declares,
            split by row order (files by name, then rows) or by ``table.split_column``.
        path: MovieLens: folder holding the raw files; empty means the copy shipped in
            the ``recbole`` wheel. Criteo: one TSV file, or a folder of ``day_N`` files
            (required). Table: one file, or a folder whose files of the format
            (``*.parquet``, ``*.csv``, ``*.tsv``) are read in name order (required).
            Unused for synthetic data.
        max_rows: Keep only the first ``max_rows`` rows in time (0 = all). Small values
            make tiny, fast runs for tests; a table larger than memory trains on its first
            ``max_rows`` rows, read a row group or block at a time.
        validation_fraction: Share of the newest rows (before the test rows) used for
            validation and model selection.
        test_fraction: Share of the newest rows held out for the final report; never used
            for selection.
        synthetic: The generator's parameters, for ``synthetic-criteo`` only.
        exclude_files: Criteo ``day_N`` file names of the folder at ``path`` to leave out
            (e.g. a corrupt shard a runbook skipped).
        table: The columns' roles and format, for ``table`` only.
    """

    name: Literal["movielens-100k", "synthetic-criteo", "criteo-tsv", "table"] = "movielens-100k"
    path: str = ""
    max_rows: int = Field(default=0, ge=0)
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    synthetic: SyntheticSpec = Field(default_factory=SyntheticSpec)
    exclude_files: tuple[str, ...] = ()
    table: TableSpec | None = None

    @model_validator(mode="after")
    def _fields_fit_the_name(self) -> "DatasetRef":
        if self.name == "criteo-tsv" and not self.path:
            raise ValueError(
                "path: criteo-tsv needs path set to a Criteo TSV file (e.g. train.txt) or "
                "a folder of day_N files"
            )
        if self.name == "table" and (not self.path or self.table is None):
            raise ValueError(
                "path/table: name='table' needs path (a Parquet, CSV or TSV file, or a folder "
                "of them) and table (the columns' roles), e.g. "
                '{"format": "parquet", "columns": {"label": "click", "sparse": ["ad_id"]}}'
            )
        if self.name != "table" and self.table is not None:
            raise ValueError(f"table: only used with name='table', got name={self.name!r}")
        # Compared with the default, not checked for presence: a dumped and re-read ref
        # (as Temporal's converter does) always carries the field.
        if self.name != "synthetic-criteo" and self.synthetic != SyntheticSpec():
            raise ValueError(
                f"synthetic: only used with name='synthetic-criteo', got name={self.name!r}; "
                "drop synthetic or set name='synthetic-criteo'"
            )
        return self
