"""The preflight checklist: what must hold before an engineer approves a plan.

Every item runs, whatever the others found, so the engineer sees the whole list at once:
a failed check is an item with ``ok=False``, its figures and a fix, never an exception.
Only unexpected errors (a bug, not the data or the plan) propagate.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError
from temporalio import activity

from activities import access
from contracts import (
    CampaignRequest,
    DatasetRef,
    ModelSpec,
    Plan,
    PreflightInput,
    PreflightItem,
    PreflightReport,
)
from ranking_models.errors import TrainingError

GIB = 2**30
DATA_FIX = (
    "fix the data or DatasetRef.path, then `rea campaign preflight ID` checks again "
    "(a plan made without the data is made again)"
)
DATA_FIRST = "fix the data first (see the data item)"


class DataSummary(Protocol):
    """What ``Ports.inspect_data`` returns (``ranking_models.smoke.DataSummary``)."""

    @property
    def schema(self) -> Any: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Ports:
    """What the checklist calls (``ranking_models`` in production, see ``production_ports``).

    Attributes:
        inspect_data: Loads and samples the data (dataset, baseline); raises
            ``BadDataError``.
        validate_spec: Raises ``BadSpecError`` for a spec that cannot be built on a schema
            (None: the schema is unknown, checks what it can without it).
        smoke_step: One training step of a spec on ``smoke_rows`` rows; its loss.
        training_bytes: A spec's memory estimate on a schema.
        memory_limit: The memory training may use on this host, in bytes.
        safety_share: The share of the limit the estimate may take.
        smoke_rows: Rows of the smoke step's batch.
    """

    inspect_data: Callable[[DatasetRef, ModelSpec], DataSummary]
    validate_spec: Callable[[ModelSpec, Any], None]
    smoke_step: Callable[[ModelSpec, DatasetRef, int], float]
    training_bytes: Callable[[ModelSpec, Any], int]
    memory_limit: Callable[[], int]
    safety_share: float = 0.8
    smoke_rows: int = 64


class PreflightActivities:
    """The checklist over injected ports.

    Args:
        ports: The checks' side of ``ranking_models``.
        data_dir: The worker's data dir (the default write scope).
    """

    def __init__(self, ports: Ports, data_dir: Path) -> None:
        self._ports = ports
        self._data_dir = data_dir

    @activity.defn(name="preflight_campaign")
    def preflight_campaign(self, inp: PreflightInput) -> PreflightReport:
        """Data, specs, a smoke step, memory, cost and access, in that order, each with
        what was found and, when it failed, how to fix it.

        Args:
            inp: The request and the plan to check.

        Returns:
            The report; ``passed`` when every item is ok.
        """
        request, plan = inp.request, inp.plan
        items: list[PreflightItem] = []

        def add(item: PreflightItem) -> None:
            items.append(item)
            if activity.in_activity():
                activity.heartbeat(item.check)

        summary: DataSummary | None = None
        try:
            summary = self._ports.inspect_data(request.dataset, request.baseline)
            add(PreflightItem(check="data", ok=True, detail=summary.describe()))
        except TrainingError as err:
            add(PreflightItem(check="data", ok=False, detail=str(err), fix=DATA_FIX))
        schema = None if summary is None else summary.schema
        specs, item = self._specs(request, plan, schema)
        add(item)
        add(self._smoke_step(request, data_ok=summary is not None))
        add(self._memory(specs, schema))
        add(self._cost(request, plan))
        add(self._access(request))
        return PreflightReport(items=items)

    def _specs(
        self, request: CampaignRequest, plan: Plan, schema: Any
    ) -> tuple[dict[str, ModelSpec], PreflightItem]:
        """The specs that build, by hypothesis id (``baseline`` first), and the item."""
        specs: dict[str, ModelSpec] = {}
        problems: list[str] = []
        candidates: list[tuple[str, dict[str, Any]]] = [("baseline", {})]
        candidates += [(h.id, h.changes) for h in plan.hypotheses]
        for name, changes in candidates:
            try:
                spec = request.baseline.with_changes(changes)
                self._ports.validate_spec(spec, schema)
            except ValidationError as err:
                problems.append(f"{name}: {_validation_message(err)}")
            except TrainingError as err:
                problems.append(f"{name}: {err}")
            else:
                specs[name] = spec
        unchecked = "" if schema is not None else " (checked without the data's schema)"
        if problems:
            return specs, PreflightItem(
                check="specs",
                ok=False,
                detail=f"{len(problems)} of {len(candidates)} specs do not build: "
                + "; ".join(problems)
                + unchecked,
                fix="revise the plan (`rea campaign revise --drop ID`) or fix the baseline",
            )
        detail = f"the baseline and {len(plan.hypotheses)} hypotheses build{unchecked}"
        return specs, PreflightItem(check="specs", ok=True, detail=detail)

    def _smoke_step(self, request: CampaignRequest, *, data_ok: bool) -> PreflightItem:
        if not data_ok:
            return PreflightItem(
                check="smoke_step", ok=False, detail="not run: the data failed", fix=DATA_FIRST
            )
        rows = self._ports.smoke_rows
        try:
            loss = self._ports.smoke_step(request.baseline, request.dataset, rows)
        except TrainingError as err:
            return PreflightItem(
                check="smoke_step",
                ok=False,
                detail=f"one training step of the baseline on {rows} rows failed: {err}",
                fix="change the baseline as the error says, then check again",
            )
        return PreflightItem(
            check="smoke_step",
            ok=True,
            detail=f"one training step of the baseline on {rows} rows: loss {loss:.4g}",
        )

    def _memory(self, specs: dict[str, ModelSpec], schema: Any) -> PreflightItem:
        if schema is None:
            return PreflightItem(
                check="memory", ok=False, detail="not estimated: the data failed", fix=DATA_FIRST
            )
        if not specs:
            return PreflightItem(
                check="memory",
                ok=False,
                detail="not estimated: no spec builds",
                fix="fix the specs first (see the specs item)",
            )
        limit = self._ports.memory_limit()
        share = self._ports.safety_share
        needs = {name: self._ports.training_bytes(spec, schema) for name, spec in specs.items()}
        largest = max(needs, key=lambda name: needs[name])
        over = [name for name, need in needs.items() if need > share * limit]
        detail = (
            f"largest: {largest} needs {needs[largest] / GIB:.3g} GiB of "
            f"{share * limit / GIB:.3g} GiB ({share:.0%} of the {limit / GIB:.3g} GiB limit)"
        )
        if not over:
            return PreflightItem(check="memory", ok=True, detail=detail)
        return PreflightItem(
            check="memory",
            ok=False,
            detail=f"{detail}; too large: {', '.join(over)}",
            fix="shrink them (embedding_dim, table_rows, fp16 embeddings), drop them "
            "(`rea campaign revise --drop ID`) or run on a larger host",
        )

    def _cost(self, request: CampaignRequest, plan: Plan) -> PreflightItem:
        budget = plan.budget_device_hours or request.budget.device_hours
        if plan.estimated_device_hours_per_trial == 0.0:
            return PreflightItem(
                check="cost",
                ok=False,
                detail=f"not measured: the data could not be read when planning (budget "
                f"{budget:g} device-hours)",
                fix="fix the data, then `rea campaign preflight ID` re-plans and measures",
            )
        estimate, high = plan.estimated_device_hours, plan.estimated_device_hours_high
        span = f"{estimate:.4g}" + (f" to {high:.4g}" if high > estimate else "")
        sized = plan.exploration is not None
        ok = plan.fits(budget)
        adapts = "; the campaign sizes its search to what trials actually cost" if sized else ""
        return PreflightItem(
            check="cost",
            ok=ok,
            detail=f"estimated {span} of {budget:g} device-hours{adapts}",
            fix=""
            if ok
            else f"approve at least {round_up(plan.cost_to_fit):g} device-hours "
            "(`--hours H`), or revise with fewer hypotheses",
        )

    def _access(self, request: CampaignRequest) -> PreflightItem:
        scope, dataset = request.access, request.dataset
        reads = [str(p) for p in access.readable_paths(scope, dataset)]
        writes = [str(p) for p in access.writable_paths(scope, self._data_dir)]
        detail = (
            f"reads {reads or ['generated or shipped data only']}"
            + ("" if scope.read else " (the dataset's own path)")
            + f"; writes {writes}"
            + ("" if scope.write else " (the worker's data dir)")
        )
        if access.dataset_readable(scope, dataset):
            return PreflightItem(check="access", ok=True, detail=detail)
        return PreflightItem(
            check="access",
            ok=False,
            detail=f"dataset path {dataset.path} is outside the read scope; {detail}",
            fix=f"add {dataset.path} to CampaignRequest.access.read",
        )


def _validation_message(err: ValidationError) -> str:
    """``field: message`` for each error (a model-level error names its field itself)."""
    parts = []
    for e in err.errors():
        where = ".".join(map(str, e["loc"]))
        parts.append(f"{where}: {e['msg']}" if where else e["msg"])
    return "; ".join(parts)


def production_ports() -> Ports:
    """The real checks (imports torch: call in a worker, never in a workflow)."""
    from ranking_models import memory
    from ranking_models.dlrm import validate_spec
    from ranking_models.smoke import inspect_data, smoke_step

    return Ports(
        inspect_data=inspect_data,
        validate_spec=validate_spec,
        smoke_step=smoke_step,
        training_bytes=memory.training_bytes,
        memory_limit=memory.memory_limit_bytes,
        safety_share=memory.SAFETY_SHARE,
    )


def round_up(hours: float, digits: int = 4) -> float:
    """``hours`` rounded up to ``digits`` significant digits: an amount that, approved as
    printed, still covers it."""
    if hours <= 0:
        return hours
    step = 10 ** (math.floor(math.log10(hours)) - digits + 1)
    return math.ceil(hours / step - 1e-9) * step
