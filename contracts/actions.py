"""The action space: every ``ModelSpec`` knob a trial may change, and its range.

Hypotheses are moves in this space (a ``changes`` dict applied by ``ModelSpec.with_changes``);
random search, TPE and openrea's own planner all search the same space. A knob's ``kind``,
``low``/``high``, ``log`` and ``step`` map one to one onto Optuna's ``suggest_float``,
``suggest_int`` and ``suggest_categorical``, so a sampler needs no table of its own.

``ModelSpec``'s validators say what can be built; this space says what is worth searching, a
narrower box sized for CTR models of MovieLens/Criteo scale. Whether a point fits a device's
memory is not decided here but by the trainer's estimators.
"""

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from contracts.base import Record

KnobKind = Literal["float", "int", "categorical", "widths"]


class Knob(Record):
    """One ``ModelSpec`` field a move may change, and the values it may take.

    Attributes:
        field: The ``ModelSpec`` field this knob sets.
        family: A short change-family name (``interaction``, ``embedding``, ``dense-arch``,
            ``over-arch``, ``normalisation``, ``regularisation``, ``dense-optimizer``,
            ``sparse-optimizer``, ``schedule``, ``batch``, ``training-length``) under which
            insights about moves are grouped.
        kind: ``float`` or ``int`` (a number in ``[low, high]``), ``categorical`` (one of
            ``choices``) or ``widths`` (a list of layer widths, each in ``[low, high]``, with
            between ``min_layers`` and ``max_layers`` layers).
        low: Smallest value (for ``widths``, the smallest width); ``None`` for
            ``categorical``.
        high: Largest value (for ``widths``, the largest width); ``None`` for
            ``categorical``.
        log: Sample on a log scale (``low`` must then be positive).
        step: Grid of an ``int`` knob or of each width: allowed values are
            ``low + k * step``; ``None`` means every integer.
        choices: The allowed values of a ``categorical`` knob.
        min_layers: Fewest layers of a ``widths`` knob.
        max_layers: Most layers of a ``widths`` knob.
        requires: Other fields' values under which this knob matters, e.g.
            ``{"interaction": "dcn"}`` for ``dcn_layers``; a move setting this knob is
            exclusive with a move setting those fields to other values.
        description: What the knob does and why its range is what it is.
    """

    field: str
    family: str
    kind: KnobKind
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | None = Field(default=None, ge=1)
    choices: list[str] | None = None
    min_layers: int | None = Field(default=None, ge=0)
    max_layers: int | None = Field(default=None, ge=0)
    requires: dict[str, str] = Field(default_factory=dict)
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> "Knob":
        where = f"knob {self.field!r}"
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError(f"{where}: a categorical knob needs choices")
            if self.low is not None or self.high is not None or self.log or self.step:
                raise ValueError(f"{where}: a categorical knob takes choices only")
            return self
        if self.choices is not None:
            raise ValueError(f"{where}: only a categorical knob takes choices")
        if self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"{where}: needs low <= high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"{where}: a log-scale knob needs low > 0, got {self.low}")
        if self.kind == "float" and self.step is not None:
            raise ValueError(f"{where}: a float knob takes no step")
        # Optuna's suggest_int refuses log=True with step > 1; refuse it here first.
        if self.log and self.step is not None and self.step > 1:
            raise ValueError(f"{where}: log scale and step > 1 cannot be combined")
        if self.kind in ("int", "widths") and not (
            isinstance(self.low, int) and isinstance(self.high, int)
        ):
            raise ValueError(f"{where}: an {self.kind} knob needs integer low and high")
        if self.kind == "widths":
            if self.min_layers is None or self.max_layers is None:
                raise ValueError(f"{where}: a widths knob needs min_layers and max_layers")
            if self.min_layers > self.max_layers:
                raise ValueError(f"{where}: min_layers > max_layers")
        elif self.min_layers is not None or self.max_layers is not None:
            raise ValueError(f"{where}: only a widths knob takes min_layers/max_layers")
        return self

    def allowed(self) -> str:
        """The allowed values in words, for error messages and prompts."""
        if self.kind == "categorical":
            return f"one of {self.choices}"
        scale = ", log scale" if self.log else ""
        grid = f", step {self.step}" if self.step else ""
        span = f"[{self.low:g}, {self.high:g}]{grid}{scale}"
        if self.kind == "widths":
            return f"{self.min_layers} to {self.max_layers} layers, each width in {span}"
        return f"{self.kind} in {span}"

    def check(self, value: Any) -> None:
        """Raise ``ValueError`` naming the field when ``value`` is outside this knob."""
        if self.kind == "categorical":
            if value not in (self.choices or []):
                raise ValueError(f"{self.field}: {value!r} is not {self.allowed()}")
        elif self.kind == "widths":
            if not isinstance(value, list) or not all(_is_int(w) for w in value):
                raise ValueError(f"{self.field}: {value!r} is not a list of widths")
            assert self.min_layers is not None and self.max_layers is not None
            if not self.min_layers <= len(value) <= self.max_layers:
                raise ValueError(
                    f"{self.field}: {len(value)} layers in {value}; allowed: {self.allowed()}"
                )
            for width in value:
                if not self._in_range(width):
                    raise ValueError(
                        f"{self.field}: width {width} in {value}; allowed: {self.allowed()}"
                    )
        else:
            number_ok = _is_int(value) or (self.kind == "float" and isinstance(value, float))
            if not number_ok or not self._in_range(value):
                raise ValueError(f"{self.field}: {value!r} is not {self.allowed()}")

    def around(self, value: Any, radius: float) -> "Knob":
        """This knob's range narrowed to a neighbourhood of ``value``: a factor ``radius`` either
        way on a log scale, ``1/radius`` of the range either way on a linear one, one layer
        either way for widths; a categorical keeps every choice. A search around a leader
        so samples near it, and never the far corners of the whole box (the dearest, too)."""
        if self.kind == "categorical":
            return self
        assert self.low is not None and self.high is not None
        if self.kind == "widths":
            assert self.min_layers is not None and self.max_layers is not None
            widths = list(value) or [int(self.low)]
            low, high = self._span(min(widths), radius), self._span(max(widths), radius)
            depth = len(value)
            return self.model_copy(
                update={
                    "low": low[0],
                    "high": high[1],
                    "min_layers": max(self.min_layers, depth - 1),
                    "max_layers": min(self.max_layers, depth + 1),
                }
            )
        low, high = self._span(value, radius)
        return self.model_copy(update={"low": low, "high": high})

    def _span(self, value: float, radius: float) -> tuple[Any, Any]:
        assert self.low is not None and self.high is not None
        if self.log and value > 0:
            low, high = value / radius, value * radius
        else:
            half = (self.high - self.low) / radius
            low, high = value - half, value + half
        low, high = max(low, self.low), min(high, self.high)
        if self.kind == "float":
            return float(low), float(high)
        step = self.step or 1
        # On the knob's grid, and never an empty range.
        first = self.low + math.ceil((low - self.low) / step) * step
        last = self.low + math.floor((high - self.low) / step) * step
        if first > last:
            first = last = min(max(int(value), int(self.low)), int(self.high))
        return int(first), int(last)

    def _in_range(self, value: float) -> bool:
        assert self.low is not None and self.high is not None
        if not (math.isfinite(value) and self.low <= value <= self.high):
            return False
        return self.step is None or (value - self.low) % self.step == 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ActionSpace(Record):
    """The knobs a search may move, one per ``ModelSpec`` field.

    Attributes:
        knobs: The knobs, at most one per field.
    """

    knobs: list[Knob]

    @model_validator(mode="after")
    def _fields_unique_and_requirements_known(self) -> "ActionSpace":
        by_field: dict[str, Knob] = {}
        for knob in self.knobs:
            if knob.field in by_field:
                raise ValueError(f"knobs: {knob.field!r} appears twice")
            by_field[knob.field] = knob
        for knob in self.knobs:
            for field, value in knob.requires.items():
                other = by_field.get(field)
                if other is None or other.kind != "categorical":
                    raise ValueError(
                        f"knob {knob.field!r} requires {field!r}, not a categorical knob"
                    )
                other.check(value)
        return self

    def knob(self, field: str) -> Knob:
        """The knob that sets ``field``.

        Raises:
            ValueError: naming ``field`` and the known knobs when there is none.
        """
        for knob in self.knobs:
            if knob.field == field:
                return knob
        known = ", ".join(k.field for k in self.knobs)
        raise ValueError(f"{field}: not a knob of the action space; knobs are: {known}")

    def check(self, changes: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the field when a change is not a move in this space.

        A change must set a knob's field to a value inside its range (for widths: the depth
        and every width). Whether the knob matters (its ``requires``) is not checked here: a
        whole ``ModelSpec`` dump sets ``dcn_layers`` beside ``interaction="dot"``.
        """
        for field, value in changes.items():
            self.knob(field).check(value)

    def families(self, changes: dict[str, Any]) -> set[str]:
        """The change families ``changes`` touches.

        Raises:
            ValueError: when a change sets a field that is not a knob.
        """
        return {self.knob(field).family for field in changes}

    def conflicts(self, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
        """Why moves ``a`` and ``b`` cannot be stacked; empty when they can.

        They conflict when they set the same field to different values, or when they need
        an exclusive choice to take different values: each move needs every categorical
        value it sets and every ``requires`` of the knobs it sets (``dcn_layers`` needs
        ``interaction="dcn"``, so it conflicts with ``interaction="projection"`` and with
        ``projection_size``).

        Raises:
            ValueError: when either move sets a field that is not a knob.
        """
        reasons = [
            f"{field}: a sets {a[field]!r}, b sets {b[field]!r}"
            for field in a
            if field in b and a[field] != b[field]
        ]
        needs_a, needs_b = self._needs(a), self._needs(b)
        for field, (value_a, why_a) in needs_a.items():
            if field not in needs_b:
                continue
            value_b, why_b = needs_b[field]
            if value_a == value_b or (field in a and field in b):
                continue  # agreeing, or already reported as the same field set twice
            reasons.append(
                f"{field}: exclusive choice; a needs {value_a!r} ({why_a}), "
                f"b needs {value_b!r} ({why_b})"
            )
        return reasons

    def _needs(self, move: dict[str, Any]) -> dict[str, tuple[Any, str]]:
        """Categorical value each categorical field must take for ``move``, and why."""
        needs: dict[str, tuple[Any, str]] = {}
        for field, value in move.items():
            knob = self.knob(field)
            if knob.kind == "categorical":
                needs[field] = (value, f"sets {field}")
        for field in move:
            for required, value in self.knob(field).requires.items():
                # An explicit setting wins: a move's own incoherence is not a conflict
                # between two moves.
                needs.setdefault(required, (value, f"sets {field}"))
        return needs


DEFAULT_ACTION_SPACE = ActionSpace(
    knobs=[
        # --- interaction -------------------------------------------------------------------
        Knob(
            field="interaction",
            family="interaction",
            kind="categorical",
            choices=["dot", "dcn", "projection"],
            description="DLRM pairwise dot, DCNv2 cross layers, or DLRM_Projection.",
        ),
        Knob(
            field="dcn_layers",
            family="interaction",
            kind="int",
            low=1,
            high=6,
            requires={"interaction": "dcn"},
            # DCNv2 reports gains saturating after 2-4 cross layers; 6 leaves headroom.
            description="DCNv2 cross layers.",
        ),
        Knob(
            field="dcn_low_rank",
            family="interaction",
            kind="int",
            low=0,
            high=256,
            requires={"interaction": "dcn"},
            # 0 (full rank) rules out a log scale; ranks past 256 cost more than full rank
            # at the embedding widths searched here.
            description="Rank of each cross layer's weight; 0 is full rank.",
        ),
        Knob(
            field="projection_size",
            family="interaction",
            kind="int",
            low=1,
            high=16,
            requires={"interaction": "projection"},
            # The interaction emits projection_size ** 2 features: 16 gives 256.
            description="Projection branch size F; the interaction emits F ** 2 features.",
        ),
        Knob(
            field="projection_hidden",
            family="interaction",
            kind="widths",
            low=16,
            high=1024,
            log=True,
            min_layers=0,
            max_layers=3,
            requires={"interaction": "projection"},
            description="Hidden widths of both projection branches (0 layers: one linear).",
        ),
        # --- embeddings --------------------------------------------------------------------
        Knob(
            field="embedding_dim",
            family="embedding",
            kind="int",
            low=4,
            high=256,
            # FBGEMM's table-batched kernels need a multiple of 4; Optuna cannot combine
            # step > 1 with a log scale, so this one is uniform on the grid.
            step=4,
            description="Width D of every embedding and of the dense arch output.",
        ),
        Knob(
            field="max_table_rows",
            family="embedding",
            kind="int",
            low=1_000,
            high=10_000_000,
            log=True,
            # Hashing size: MovieLens needs well under 1e5 rows; Criteo's large features
            # are commonly hashed to 1e6-1e7 (DLRM's Kaggle/Terabyte settings).
            description="Ids are hashed into at most this many rows per table.",
        ),
        Knob(
            field="embedding_precision",
            family="embedding",
            kind="categorical",
            choices=["fp32", "fp16"],
            description="Storage of embedding rows.",
        ),
        # --- dense and over arch -----------------------------------------------------------
        Knob(
            field="dense_hidden",
            family="dense-arch",
            kind="widths",
            low=16,
            high=1024,
            log=True,
            min_layers=0,
            max_layers=4,
            description="Hidden widths of the dense arch (0 layers: one linear to D).",
        ),
        Knob(
            field="over_hidden",
            family="over-arch",
            kind="widths",
            low=16,
            high=1024,
            log=True,
            min_layers=1,
            max_layers=5,
            description="Hidden widths of the over arch; ModelSpec needs at least one.",
        ),
        Knob(
            field="dense_norm",
            family="normalisation",
            kind="categorical",
            choices=["none", "batch", "layer"],
            description="Normalisation of the raw dense inputs.",
        ),
        # --- regularisation ----------------------------------------------------------------
        Knob(
            field="dropout",
            family="regularisation",
            kind="float",
            low=0.0,
            high=0.5,
            # Past 0.5 the small over arches searched here mostly underfit.
            description="Dropout after each over-arch hidden layer.",
        ),
        Knob(
            field="weight_decay",
            family="regularisation",
            kind="float",
            low=0.0,
            high=1e-3,
            # 0 (off, the default) rules out a log scale; CTR models use 1e-6..1e-4.
            description="L2 penalty on the dense parts.",
        ),
        # --- optimizers --------------------------------------------------------------------
        Knob(
            field="dense_optimizer",
            family="dense-optimizer",
            kind="categorical",
            choices=["adam", "adagrad", "sgd"],
            description="Optimizer of the dense parts.",
        ),
        Knob(
            field="dense_lr",
            family="dense-optimizer",
            kind="float",
            low=1e-5,
            high=1.0,
            log=True,
            # One box for every optimizer: Adam wants ~1e-4..1e-2, SGD/Adagrad up to ~1.
            description="Peak learning rate of the dense parts.",
        ),
        Knob(
            field="grad_clip_norm",
            family="dense-optimizer",
            kind="float",
            low=0.0,
            high=10.0,
            # 0 turns clipping off, so the scale is linear.
            description="Clip of the dense gradients' global L2 norm; 0 is off.",
        ),
        Knob(
            field="sparse_optimizer",
            family="sparse-optimizer",
            kind="categorical",
            choices=["rowwise_adagrad", "adam", "sgd"],
            description="Optimizer fused into the embedding backward.",
        ),
        Knob(
            field="sparse_lr",
            family="sparse-optimizer",
            kind="float",
            low=1e-4,
            high=1.0,
            log=True,
            # Row-wise Adagrad on embeddings is typically run at 1e-2..1e-1, SGD near 1.
            description="Peak learning rate of the embeddings.",
        ),
        # --- schedule ----------------------------------------------------------------------
        Knob(
            field="lr_schedule",
            family="schedule",
            kind="categorical",
            choices=["none", "linear", "cosine"],
            description="Decay after warmup.",
        ),
        Knob(
            field="lr_warmup_steps",
            family="schedule",
            kind="int",
            low=0,
            high=5_000,
            # 0 (no warmup) rules out a log scale. A MovieLens-1M epoch at batch 512 is
            # ~2k steps, so longer warmups would never reach the peak rate.
            description="Steps over which both learning rates rise linearly from 0.",
        ),
        # --- batch and length --------------------------------------------------------------
        Knob(
            field="batch_size",
            family="batch",
            kind="int",
            low=64,
            high=16_384,
            log=True,
            description="Examples per step.",
        ),
        Knob(
            field="epochs",
            family="training-length",
            kind="int",
            low=1,
            high=10,
            # CTR models often overfit after one epoch on Criteo; small data may want more.
            description="Passes over the training split.",
        ),
    ]
)
