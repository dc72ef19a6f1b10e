"""The offline research agent: techniques from a catalog, ranked by what history says.

The catalog (``knowledge/techniques.yaml``) keeps ranking-model techniques as data: each is a
small program of changes relative to the baseline (``{times: 2}`` on ``embedding_dim``), when
it applies, a modest prior on its relative NE gain, its cost and a citation. ``KnowledgeAgent``
instantiates the applicable ones on a campaign's baseline, moves each prior toward what similar
past campaigns observed (a normal-normal update, so thin evidence moves it little), adds
cross-family combinations and the past winners no technique covers, and ranks them by expected
gain per cost.

A plain library: no Temporal here; the planning activity calls it.
"""

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contracts.actions import DEFAULT_ACTION_SPACE, Knob
from contracts.campaign import CampaignRequest, Hypothesis, canonical
from contracts.insights import Insight, Proposals, describe
from contracts.model import ModelSpec
from contracts.provenance import Provenance
from contracts.task import TaskDescriptor

AGENT = "knowledge-catalog/1"
# Two-sided 95% normal quantile: insights' intervals are 95% intervals of the mean gain.
Z95 = 1.959963984540054
# Combined changes overlap (two capacity increases partly buy the same thing), so a pair is
# expected to deliver less than the sum of its parts unless past merges said otherwise.
OVERLAP_DISCOUNT = 0.8
# A past winner with no technique behind it starts from "no effect", this unsure.
INSIGHT_PRIOR_SD = 0.005
# In the first ``max_hypotheses``, at most this many per family, so that one family's
# variations do not crowd out the others (the planner re-ranks with its own penalty).
MAX_PER_FAMILY = 2
MAX_ID_LENGTH = 48
# Technique ids stay short so that ``combo-<a>+<b>`` fits in MAX_ID_LENGTH.
MAX_TECHNIQUE_ID = 20
# The kinds whose best members are paired, anchor first: gains engineers tend to leave on the
# table by tuning one family at a time.
COMBINED_KINDS: tuple[tuple[str, str], ...] = (
    ("architecture", "training-efficiency"),
    ("architecture", "optimization"),
)

Kind = Literal["architecture", "training-efficiency", "optimization", "regularisation"]
OpName = Literal["set", "times", "plus", "prepend_layer", "append_layer"]
OP_NAMES: tuple[str, ...] = ("set", "times", "plus", "prepend_layer", "append_layer")
NAMED_WIDTHS = ("max", "min", "first", "last")
CostFactor = Callable[[ModelSpec], float]


class CatalogError(ValueError):
    """The catalog is malformed; the message names the technique and the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Op(_Frozen):
    """One change of a technique: what to do to one ``ModelSpec`` field.

    Attributes:
        op: ``set`` (a value), ``times`` (multiply a number or every width), ``plus`` (add to
            a number), ``prepend_layer`` / ``append_layer`` (a widths list gains a layer).
        arg: The value, factor, addend or new layer's width (a number, or ``max``, ``min``,
            ``first``, ``last`` of the current widths).
    """

    op: OpName
    arg: Any


class Condition(_Frozen):
    """When a field's value lets a technique apply; every part given must hold.

    Attributes:
        one_of: Allowed values (YAML: a bare value, or ``in: [...]``).
        none_of: Refused values (YAML: ``not: [...]``).
        min: Smallest allowed number (inclusive).
        max: Largest allowed number (inclusive).
        exceeds: A baseline field the value must be strictly greater than.
        below: A baseline field the value must be strictly less than.
    """

    one_of: list[Any] | None = None
    none_of: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    exceeds: str | None = None
    below: str | None = None

    def numeric(self) -> bool:
        return any(v is not None for v in (self.min, self.max, self.exceeds, self.below))

    def holds(self, value: Any, baseline: ModelSpec) -> bool:
        """Whether ``value`` meets this condition (baseline fields are read from ``baseline``)."""
        if self.one_of is not None and value not in self.one_of:
            return False
        if self.none_of is not None and value in self.none_of:
            return False
        if self.numeric() and not _is_number(value):
            return False
        if self.min is not None and value < self.min:
            return False
        if self.max is not None and value > self.max:
            return False
        if self.exceeds is not None and not value > getattr(baseline, self.exceeds):
            return False
        return self.below is None or value < getattr(baseline, self.below)


class Prior(_Frozen):
    """Belief about a technique's relative gain before (or after) evidence.

    Attributes:
        gain: Mean relative gain of the metric (positive is better), e.g. 0.003 for 0.3% NE.
        sd: Its standard deviation.
    """

    gain: float = Field(ge=-0.1, le=0.1)
    sd: float = Field(gt=0.0, le=0.1)


class Technique(_Frozen):
    """One catalog entry (see ``knowledge/techniques.yaml`` for the op language).

    Attributes:
        id: Kebab-case, short (combinations are named ``combo-<a>+<b>``).
        title: One line; ``{old.<field>}`` and ``{new.<field>}`` are the baseline's and the
            candidate's values.
        family: The action-space family it belongs to (a family of one of its knobs).
        kind: What kind of change it is; combinations pair different kinds.
        changes: Field -> op, relative to the baseline.
        when: Field (or ``task.<field>``) -> condition; all must hold.
        prior: Expected relative gain and its uncertainty, before evidence.
        cost: Trial cost relative to the baseline's (when no cost model is given).
        rationale: Why it might help.
        citation: Where it is published.
    """

    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=MAX_TECHNIQUE_ID)
    title: str = Field(min_length=1)
    family: str
    kind: Kind
    changes: dict[str, Op] = Field(min_length=1)
    when: dict[str, Condition] = Field(default_factory=dict)
    prior: Prior
    cost: float = Field(gt=0.0, le=100.0)
    rationale: str = Field(min_length=1)
    citation: str = ""

    @field_validator("changes", mode="before")
    @classmethod
    def _parse_ops(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw  # pydantic reports the type error
        return {field: _parse_op(field, value) for field, value in raw.items()}

    @field_validator("when", mode="before")
    @classmethod
    def _parse_conditions(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        return {field: _parse_condition(field, value) for field, value in raw.items()}

    @model_validator(mode="after")
    def _valid_moves(self) -> "Technique":
        families = set()
        for field, op in self.changes.items():
            try:
                knob = DEFAULT_ACTION_SPACE.knob(field)
            except ValueError as err:
                raise ValueError(f"changes.{field}: {err}") from None
            _check_op(knob, op)
            families.add(knob.family)
        if self.family not in families:
            raise ValueError(
                f"family: {self.family!r} is not a family of the knobs it changes "
                f"({', '.join(sorted(families))})"
            )
        for key, condition in self.when.items():
            _check_condition(key, condition)
        try:
            self.title.format(old=ModelSpec(), new=ModelSpec())
        except (AttributeError, KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"title: {self.title!r} does not format ({type(err).__name__}: {err}); "
                "placeholders are {old.<field>} and {new.<field>}"
            ) from None
        return self


def _parse_op(field: str, raw: Any) -> Any:
    """YAML shorthand -> ``Op`` fields: a bare value sets; a one-key mapping names the op."""
    if isinstance(raw, Op):
        return raw
    if isinstance(raw, dict):
        if len(raw) != 1 or next(iter(raw)) not in OP_NAMES:
            raise ValueError(
                f"{field}: {raw!r} is not an op; write a value, or one of "
                "{set: v}, {times: x}, {plus: x}, {prepend_layer: w}, {append_layer: w}"
            )
        ((name, arg),) = raw.items()
        return {"op": name, "arg": arg}
    return {"op": "set", "arg": raw}


def _parse_condition(field: str, raw: Any) -> Any:
    """YAML shorthand -> ``Condition`` fields: a bare value means equality."""
    if isinstance(raw, Condition):
        return raw
    if not isinstance(raw, dict):
        return {"one_of": [raw]}
    renamed = {"in": "one_of", "not": "none_of"}
    known = {"in", "not", "min", "max", "exceeds", "below"}
    if unknown := sorted(set(raw) - known):
        raise ValueError(f"{field}: unknown condition {unknown}; known: {sorted(known)}")
    if not raw:
        raise ValueError(f"{field}: an empty condition")
    return {renamed.get(k, k): v for k, v in raw.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_op(knob: Knob, op: Op) -> None:
    """Raise ``ValueError`` naming the field when ``op`` cannot apply to ``knob``."""
    where = f"changes.{knob.field}"
    if op.op == "set":
        try:
            knob.check(op.arg)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    elif op.op in ("times", "plus"):
        allowed = ("int", "float", "widths") if op.op == "times" else ("int", "float")
        if knob.kind not in allowed:
            raise ValueError(f"{where}: {op.op} does not apply to a {knob.kind} knob")
        if not _is_number(op.arg) or not math.isfinite(op.arg):
            raise ValueError(f"{where}: {op.op} needs a number, got {op.arg!r}")
        if op.op == "times" and op.arg <= 0:
            raise ValueError(f"{where}: times needs a positive factor, got {op.arg!r}")
        if op.op == "plus" and op.arg == 0:
            raise ValueError(f"{where}: plus 0 changes nothing")
    else:
        if knob.kind != "widths":
            raise ValueError(f"{where}: {op.op} applies to a widths knob, not {knob.kind}")
        named = isinstance(op.arg, str) and op.arg in NAMED_WIDTHS
        if not named and not (_is_number(op.arg) and knob._in_range(op.arg)):
            raise ValueError(
                f"{where}: {op.op} takes one of {list(NAMED_WIDTHS)} or a width in "
                f"[{knob.low}, {knob.high}], got {op.arg!r}"
            )


def _field_annotation(key: str) -> Any:
    """The annotation of a ``when`` key (``field`` or ``task.field``), or raise naming it."""
    model: type[BaseModel] = ModelSpec
    name = key
    if key.startswith("task."):
        model, name = TaskDescriptor, key.removeprefix("task.")
    if name not in model.model_fields:
        raise ValueError(
            f"when.{key}: {name!r} is not a field of {model.__name__}; fields: "
            f"{', '.join(model.model_fields)}"
        )
    return model.model_fields[name].annotation


def _check_condition(key: str, condition: Condition) -> None:
    annotation = _field_annotation(key)
    if condition.numeric() and annotation not in (int, float):
        raise ValueError(f"when.{key}: min/max/exceeds/below need a number field")
    for ref in (condition.exceeds, condition.below):
        if ref is not None and ModelSpec.model_fields.get(ref, None) is None:
            raise ValueError(f"when.{key}: {ref!r} is not a baseline (ModelSpec) field")
        if ref is not None and ModelSpec.model_fields[ref].annotation not in (int, float):
            raise ValueError(f"when.{key}: {ref!r} is not a number field")
    if key.startswith("task."):
        return
    try:
        knob = DEFAULT_ACTION_SPACE.knob(key)
    except ValueError:
        return  # a field outside the action space (e.g. table_rows): nothing to check against
    if knob.kind == "categorical":
        # A typo (``interaction: dott``) would silently never apply; refuse it at load.
        for value in [*(condition.one_of or []), *(condition.none_of or [])]:
            try:
                knob.check(value)
            except ValueError as err:
                raise ValueError(f"when.{key}: {err}") from None


def load_catalog(path: Path | None = None) -> list[Technique]:
    """The technique catalog, validated.

    Args:
        path: A catalog file; default the packaged ``knowledge/techniques.yaml``.

    Returns:
        The techniques, in file order.

    Raises:
        CatalogError: naming the file, the technique's id and the field at fault (an unknown
            knob, a bad op, a value outside the action space, a family that is not one of its
            knobs', a duplicate id...).
    """
    if path is None:
        source = "knowledge/techniques.yaml"
        text = resources.files("knowledge").joinpath("techniques.yaml").read_text("utf-8")
    else:
        source, text = str(path), path.read_text("utf-8")
    try:
        entries = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CatalogError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(entries, list):
        raise CatalogError(f"{source}: expected a list of techniques, got {type(entries).__name__}")
    techniques: list[Technique] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        name = entry.get("id", f"#{i + 1}") if isinstance(entry, dict) else f"#{i + 1}"
        try:
            technique = Technique.model_validate(entry)
        except ValidationError as err:
            problems = "; ".join(_describe_error(e) for e in err.errors())
            raise CatalogError(f"{source}: technique {name!r}: {problems}") from None
        if technique.id in seen:
            raise CatalogError(f"{source}: technique {name!r}: id: appears twice")
        seen.add(technique.id)
        techniques.append(technique)
    return techniques


def _describe_error(error: Any) -> str:
    """One pydantic error as ``field: message``; our validators already name the field."""
    message = str(error["msg"]).removeprefix("Value error, ")
    loc = ".".join(str(part) for part in error["loc"])
    return f"{loc}: {message}" if loc else message


# --- instantiation -------------------------------------------------------------------------


def applies(technique: Technique, baseline: ModelSpec, task: TaskDescriptor | None) -> bool:
    """Whether every ``when`` condition holds; a task condition fails while the task is
    unknown (the technique depends on the data's shape, which nobody has measured)."""
    for key, condition in technique.when.items():
        if key.startswith("task."):
            if task is None:
                return False
            value = getattr(task, key.removeprefix("task."))
        else:
            value = getattr(baseline, key)
        if not condition.holds(value, baseline):
            return False
    return True


def instantiate(
    technique: Technique, baseline: ModelSpec, task: TaskDescriptor | None = None
) -> dict[str, Any] | None:
    """The technique's changes to ``baseline``, or None when it does not make a valid move.

    None when a ``when`` condition fails, when the result changes nothing (e.g. a dim already
    at its cap), when it leaves the action space, when a knob it sets does not matter on the
    result (``dcn_layers`` without ``interaction=dcn``), or when the spec cannot be built.
    Fields the ops leave at the baseline's value are left out, so equal moves compare equal.
    """
    if not applies(technique, baseline, task):
        return None
    return _apply(technique, baseline)[0]


def _apply(technique: Technique, baseline: ModelSpec) -> tuple[dict[str, Any] | None, str]:
    """(changes, "") for a valid move, else (None, why not)."""
    changes: dict[str, Any] = {}
    for field, op in technique.changes.items():
        knob = DEFAULT_ACTION_SPACE.knob(field)
        value = _apply_op(op, knob, getattr(baseline, field))
        if value is None:
            return None, f"{field}: {op.op} {op.arg!r} has nothing to act on"
        if value != getattr(baseline, field):
            changes[field] = value
    if not changes:
        return None, "changes nothing on this baseline"
    try:
        DEFAULT_ACTION_SPACE.check(changes)
        candidate = baseline.with_changes(changes)
    except ValidationError as err:
        return None, f"cannot be built: {err.errors()[0]['msg']}"
    except ValueError as err:
        return None, f"outside the action space: {err}"
    for field in changes:
        for required, value in DEFAULT_ACTION_SPACE.knob(field).requires.items():
            if getattr(candidate, required) != value:
                return None, f"{field} matters only with {required}={value!r}"
    return changes, ""


def _apply_op(op: Op, knob: Knob, old: Any) -> Any:
    if op.op == "set":
        return op.arg
    if op.op == "times":
        if knob.kind == "widths":
            return [_snap(knob, w * op.arg) for w in old]
        return _snap(knob, old * op.arg)
    if op.op == "plus":
        return _snap(knob, old + op.arg)
    width = _layer_width(op.arg, old)
    if width is None:
        return None
    return [width, *old] if op.op == "prepend_layer" else [*old, width]


def _layer_width(arg: Any, widths: list[int]) -> int | None:
    if not isinstance(arg, str):
        return int(arg)
    if not widths:
        return None  # max/first... of no layers: the technique does not apply
    named = {"max": max(widths), "min": min(widths), "first": widths[0], "last": widths[-1]}
    return named[arg]


def _snap(knob: Knob, value: float) -> int | float:
    """``value`` clamped to the knob's range and rounded to its grid (ints: half up)."""
    assert knob.low is not None and knob.high is not None
    value = min(max(value, knob.low), knob.high)
    if knob.kind == "float":
        # Six significant digits: lr x 1/3 reads 0.000333333, and equal moves stay equal.
        return float(f"{value:.6g}")
    step = knob.step or 1
    snapped = int(knob.low + math.floor((value - knob.low) / step + 0.5) * step)
    return min(snapped, int(knob.low + (knob.high - knob.low) // step * step))


# --- what history says ---------------------------------------------------------------------


def normal_update(
    prior_mean: float, prior_sd: float, observed: float, standard_error: float
) -> tuple[float, float]:
    """The posterior (mean, sd) of a normal prior updated by one normal observation.

    The mean is the precision-weighted average of the prior mean and the observation: an
    observation with a large standard error (thin evidence) leaves the prior nearly as it
    was; one far more precise than the prior dominates it. An infinite standard error (no
    evidence) returns the prior.

    Args:
        prior_mean: The prior's mean.
        prior_sd: The prior's standard deviation (> 0).
        observed: The observed mean.
        standard_error: The observed mean's standard error (> 0; ``math.inf`` for none).
    """
    if prior_sd <= 0 or standard_error <= 0:
        raise ValueError(f"sds must be positive, got {prior_sd} and {standard_error}")
    if math.isinf(standard_error):
        return prior_mean, prior_sd
    prior_precision, precision = prior_sd**-2, standard_error**-2
    total = prior_precision + precision
    mean = (prior_precision * prior_mean + precision * observed) / total
    return mean, total**-0.5


def evidence_standard_error(insight: Insight, prior_sd: float) -> float:
    """How precisely ``insight`` measured its change's gain for the task asked about.

    From its 95% interval when it has one. The store pools comparisons with weights that
    are normalised, so the interval is as tight for evidence from dissimilar tasks as from
    identical ones; scaling the precision by the mean similarity (``weight / comparisons``)
    makes evidence from other kinds of tasks count for less. Without an interval, each unit
    of effective count (``weight``) counts as one observation as noisy as the prior. No
    weight: ``math.inf`` (no evidence).
    """
    if insight.weight <= 0:
        return math.inf
    if insight.gain_low is not None and insight.gain_high is not None:
        se = max((insight.gain_high - insight.gain_low) / (2 * Z95), 1e-6)
        share = min(1.0, insight.weight / max(insight.comparisons, 1))
        return se / math.sqrt(share)
    return prior_sd / math.sqrt(insight.weight)


def posterior(prior: Prior, insight: Insight | None) -> Prior:
    """``prior`` moved toward what ``insight`` observed (unchanged when there is none)."""
    if insight is None:
        return prior
    se = evidence_standard_error(insight, prior.sd)
    mean, sd = normal_update(prior.gain, prior.sd, insight.mean_gain, se)
    return Prior(gain=max(min(mean, 0.1), -0.1), sd=sd)


def _pct(x: float) -> str:
    return f"{x:+.2%}"


def evidence_text(prior: Prior, insight: Insight | None, post: Prior) -> str:
    """What the prior and past experiments say about a move, in words."""
    head = f"prior {_pct(prior.gain)} ±{prior.sd:.2%}"
    if insight is None or insight.weight <= 0:
        return f"{head}; no past evidence"
    interval = (
        f" [{_pct(insight.gain_low)}, {_pct(insight.gain_high)}]"
        if insight.gain_low is not None and insight.gain_high is not None
        else ""
    )
    return (
        f"{head}; {insight.comparisons} past comparison(s) on similar tasks "
        f"(effective {insight.weight:.1f}, {insight.passed} passed): "
        f"{_pct(insight.mean_gain)}{interval}; expected {_pct(post.gain)}"
    )


# --- the agent -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """A ranked move with what combinations need to know about it."""

    hypothesis: Hypothesis
    kind: str = ""  # the technique's kind; empty for combinations and past winners
    technique: Technique | None = None
    parts: tuple[str, ...] = ()  # a combination's parts, anchor first

    @property
    def score(self) -> float:
        return self.hypothesis.expected_gain / self.hypothesis.cost_factor

    @property
    def key(self) -> tuple[float, str]:
        return (-self.score, self.hypothesis.id)


class KnowledgeAgent:
    """Proposes catalog techniques on a baseline, ranked by posterior gain per cost.

    Args:
        catalog: The techniques; default the packaged catalog.
    """

    def __init__(self, catalog: list[Technique] | None = None) -> None:
        self.catalog = catalog if catalog is not None else load_catalog()

    def propose(
        self,
        request: CampaignRequest,
        task: TaskDescriptor | None,
        insights: list[Insight],
        max_hypotheses: int,
        cost_factor: CostFactor | None = None,
    ) -> Proposals:
        """Hypotheses for ``request.baseline``, best first.

        Args:
            request: The campaign (its baseline is what the techniques change).
            task: The task, for techniques that depend on the data's shape (None: unknown).
            insights: What similar past campaigns observed, similarity-weighted.
            max_hypotheses: At most this many hypotheses.
            cost_factor: A candidate spec's cost relative to the baseline's (the planner's
                analytic FLOP ratio); default the catalog's cost of each technique.

        Returns:
            ``Proposals`` from source ``knowledge``: technique instances, cross-family
            combinations and past winners (source ``insights``), each with provenance, the
            posterior expected gain and the cost factor; what was refused, and why.
        """
        baseline = request.baseline
        by_change = _insights_by_change(insights)
        rejected: list[str] = []

        def cost(changes: dict[str, Any], fallback: float) -> float:
            if cost_factor is None:
                return fallback
            value = cost_factor(baseline.with_changes(changes))
            # A broken cost model must not zero out or invert a ranking: fall back.
            return value if math.isfinite(value) and value > 0 else fallback

        singles: list[_Candidate] = []
        for technique in self.catalog:
            if not applies(technique, baseline, task):
                continue
            changes, why = _apply(technique, baseline)
            if changes is None:
                rejected.append(f"{technique.id}: {why}")
                continue
            singles.append(
                self._single(technique, baseline, changes, by_change, cost(changes, technique.cost))
            )
        singles = _dedupe(sorted(singles, key=lambda c: c.key), rejected)
        combos = _combinations(baseline, singles, by_change, cost, rejected)
        covered = {describe(baseline, c.hypothesis.changes)[0] for c in singles}
        winners = _past_winners(baseline, insights, covered, cost, rejected)
        pool = _dedupe(sorted([*singles, *combos, *winners], key=lambda c: c.key), rejected)
        chosen = _select(pool, max_hypotheses)
        shaped = sum(1 for c in singles if describe(baseline, c.hypothesis.changes)[0] in by_change)
        note = (
            f"knowledge catalog: {len(singles)} of {len(self.catalog)} techniques apply to this "
            f"baseline; {shaped} shaped by past evidence; {len(combos)} combination(s); "
            f"{len(winners)} past winner(s) outside the catalog"
        )
        return Proposals(
            source="knowledge",
            hypotheses=[c.hypothesis for c in chosen],
            rejected=rejected,
            note=note,
            task=task,
            insights=insights,
        )

    @staticmethod
    def _single(
        technique: Technique,
        baseline: ModelSpec,
        changes: dict[str, Any],
        by_change: dict[str, Insight],
        cost_factor: float,
    ) -> _Candidate:
        change, family = describe(baseline, changes)
        insight = by_change.get(change)
        post = posterior(technique.prior, insight)
        title = technique.title.format(old=baseline, new=baseline.with_changes(changes))
        return _Candidate(
            Hypothesis(
                id=technique.id,
                title=title,
                rationale=technique.rationale,
                source="knowledge",
                changes=changes,
                provenance=Provenance(
                    source="knowledge",
                    agent=AGENT,
                    technique=technique.id,
                    citation=technique.citation,
                    evidence=evidence_text(technique.prior, insight, post),
                ),
                expected_gain=post.gain,
                cost_factor=cost_factor,
                family=family,
            ),
            kind=technique.kind,
            technique=technique,
        )


def _insights_by_change(insights: Iterable[Insight]) -> dict[str, Insight]:
    """The best-evidenced insight per change (the store returns one per change anyway)."""
    out: dict[str, Insight] = {}
    for insight in insights:
        held = out.get(insight.change)
        if held is None or insight.weight > held.weight:
            out[insight.change] = insight
    return out


def _dedupe(candidates: list[_Candidate], rejected: list[str]) -> list[_Candidate]:
    """The first (best-ranked) candidate of each move and of each id."""
    seen: dict[str, str] = {}
    ids: set[str] = set()
    out = []
    for c in candidates:
        key = canonical(c.hypothesis.changes)
        if key in seen:
            rejected.append(f"{c.hypothesis.id}: duplicate of {seen[key]}")
            continue
        if c.hypothesis.id in ids:
            rejected.append(f"{c.hypothesis.id}: duplicate id")
            continue
        seen[key] = c.hypothesis.id
        ids.add(c.hypothesis.id)
        out.append(c)
    return out


def _combinations(
    baseline: ModelSpec,
    ranked: list[_Candidate],
    by_change: dict[str, Insight],
    cost: Callable[[dict[str, Any], float], float],
    rejected: list[str],
) -> list[_Candidate]:
    """For each pair of kinds, the best anchor (positive expected gain) stacked with the best
    partner of the other kind that does not conflict with it.

    A conflicting partner (same field, or an exclusive choice such as two interactions) is
    skipped for the next one, and the skip is recorded.
    """
    out: list[_Candidate] = []
    for first, second in COMBINED_KINDS:
        anchor = next(
            (c for c in ranked if c.kind == first and c.hypothesis.expected_gain > 0), None
        )
        if anchor is None:
            continue
        for partner in (c for c in ranked if c.kind == second):
            a, b = anchor.hypothesis, partner.hypothesis
            if reasons := DEFAULT_ACTION_SPACE.conflicts(a.changes, b.changes):
                rejected.append(f"combo-{a.id}+{b.id}: conflicts ({'; '.join(reasons)})")
                continue
            combo = _combine(baseline, anchor, partner, by_change, cost)
            if combo is None:
                rejected.append(f"combo-{a.id}+{b.id}: the merged spec cannot be built")
                continue
            out.append(combo)
            break
    return out


def _combine(
    baseline: ModelSpec,
    anchor: _Candidate,
    partner: _Candidate,
    by_change: dict[str, Insight],
    cost: Callable[[dict[str, Any], float], float],
) -> _Candidate | None:
    a, b = anchor.hypothesis, partner.hypothesis
    changes = {**a.changes, **b.changes}
    try:
        DEFAULT_ACTION_SPACE.check(changes)
        baseline.with_changes(changes)
    except ValueError:  # pydantic's ValidationError is a ValueError
        return None
    key_a, key_b = describe(baseline, a.changes)[0], describe(baseline, b.changes)[0]
    parts = a.expected_gain + b.expected_gain
    excess = _observed_excess(by_change, key_a, key_b)
    if excess is None:
        gain = parts * OVERLAP_DISCOUNT
        how = f"sum of parts {_pct(parts)} x {OVERLAP_DISCOUNT:g} (overlap discount)"
    else:
        gain = parts + excess[0]
        how = f"sum of parts {_pct(parts)} {_pct(excess[0])} as {excess[1]} past merge(s) showed"
    assert anchor.technique is not None and partner.technique is not None
    change, family = describe(baseline, changes)
    return _Candidate(
        Hypothesis(
            id=f"combo-{a.id}+{b.id}"[:MAX_ID_LENGTH],
            title=f"{a.title} + {b.title}",
            rationale=(
                f"Stacks a {anchor.kind} change with a {partner.kind} one, which are rarely "
                f"tuned together: {anchor.technique.rationale} / {partner.technique.rationale}"
            ),
            source="knowledge",
            changes=changes,
            provenance=Provenance(
                source="knowledge",
                agent=AGENT,
                technique=f"{a.id}+{b.id}",
                citation="; ".join(
                    c for c in (anchor.technique.citation, partner.technique.citation) if c
                ),
                evidence=f"{how}; {change}",
            ),
            expected_gain=max(min(gain, 0.1), -0.1),
            cost_factor=cost(changes, a.cost_factor * b.cost_factor),
            family=family,
        ),
        parts=(a.id, b.id),
    )


def _observed_excess(
    by_change: dict[str, Insight], key_a: str, key_b: str
) -> tuple[float, int] | None:
    """Mean excess (merged gain minus the parts') of past merges of the two, and their count."""
    found = [
        (i.excess, i.n)
        for mine, other in ((key_a, key_b), (key_b, key_a))
        if (insight := by_change.get(mine)) is not None
        for i in insight.interactions
        if i.change == other and i.n > 0
    ]
    if not found:
        return None
    # Both directions record the same merges (the store writes one per part): average them.
    n = max(count for _, count in found)
    return sum(e * c for e, c in found) / sum(c for _, c in found), n


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _past_winners(
    baseline: ModelSpec,
    insights: list[Insight],
    covered: set[str],
    cost: Callable[[dict[str, Any], float], float],
    rejected: list[str],
) -> list[_Candidate]:
    """Changes that won on similar tasks (a passed gate, or an interval above zero) that no
    technique instance covers, re-validated on this baseline.

    An insight's ``changes`` are one concrete instance (absolute values); on this baseline
    they may mean another change (``embedding_dim: 32`` is ×2 from 16 but ÷2 from 64), so one
    whose change no longer reads the same is refused rather than credited with evidence
    about something else.
    """
    out: list[_Candidate] = []
    ids: set[str] = set()
    for insight in insights:
        won = insight.passed >= 1 or (insight.gain_low is not None and insight.gain_low > 0)
        if not won or insight.change in covered:
            continue
        changes = {f: v for f, v in insight.changes.items() if getattr(baseline, f, None) != v}
        label = f"insight {insight.change!r}"
        try:
            DEFAULT_ACTION_SPACE.check(changes)
            baseline.with_changes(changes)
        except ValueError as err:
            rejected.append(f"{label}: not a valid move on this baseline: {err}")
            continue
        change, family = describe(baseline, changes)
        if change != insight.change:
            rejected.append(f"{label}: means {change!r} on this baseline")
            continue
        prior = Prior(gain=0.0, sd=INSIGHT_PRIOR_SD)
        post = posterior(prior, insight)
        hid, n = f"insight-{_slug(insight.change)}"[:MAX_ID_LENGTH], 2
        while hid in ids:
            suffix = f"-{n}"
            hid = f"insight-{_slug(insight.change)}"[: MAX_ID_LENGTH - len(suffix)] + suffix
            n += 1
        ids.add(hid)
        out.append(
            _Candidate(
                Hypothesis(
                    id=hid,
                    title=f"{insight.change} (won on similar tasks)",
                    rationale=(
                        f"Passed {insight.passed} of {insight.comparisons} past comparison(s) "
                        f"in {insight.campaigns} campaign(s) on similar tasks; no catalog "
                        "technique covers it."
                    ),
                    source="insights",
                    changes=changes,
                    provenance=Provenance(
                        source="insights",
                        agent=AGENT,
                        evidence=evidence_text(prior, insight, post),
                    ),
                    expected_gain=post.gain,
                    cost_factor=cost(
                        changes, insight.cost_ratio if insight.cost_ratio > 0 else 1.0
                    ),
                    family=family,
                )
            )
        )
    return out


def _select(ranked: list[_Candidate], n: int) -> list[_Candidate]:
    """The first ``n`` of ``ranked`` under diversity rules, best first.

    First the best single move of each source (a source's ideas are only learned from if
    some of them run); then, in rank order, candidates whose families each hold fewer than
    ``MAX_PER_FAMILY`` places, a combination only once its anchor is in (a merge whose main
    part was never tested alone cannot be attributed); then the rest in rank order.
    """
    chosen: list[_Candidate] = []
    ids: set[str] = set()
    counts: Counter[str] = Counter()

    def take(c: _Candidate) -> None:
        chosen.append(c)
        ids.add(c.hypothesis.id)
        counts.update(c.hypothesis.families)

    sources: set[str] = set()
    for c in ranked:
        if not c.parts and c.hypothesis.source not in sources and len(chosen) < n:
            take(c)
            sources.add(c.hypothesis.source)

    def eligible(c: _Candidate) -> bool:
        if c.hypothesis.id in ids or (c.parts and c.parts[0] not in ids):
            return False
        return all(counts[f] < MAX_PER_FAMILY for f in c.hypothesis.families)

    # Rescan from the top after each pick: taking an anchor makes its combinations eligible.
    while len(chosen) < n and (pick := next((c for c in ranked if eligible(c)), None)):
        take(pick)
    for c in ranked:
        if len(chosen) >= n:
            break
        if c.hypothesis.id not in ids:
            take(c)
    return sorted(chosen, key=lambda c: c.key)
