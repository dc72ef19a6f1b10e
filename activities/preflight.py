"""The preflight checklist: what must hold before an engineer approves a plan.

Every item runs, whatever the others found, so the engineer sees the whole list at once.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio import activity

from activities import access
from contracts import (
    DatasetRef,
    ModelSpec,
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


@dataclass(frozen=True)
class Ports:
    """What the checklist calls (``ranking_models`` in production).

    Attributes:
        inspect_data: Loads the data; returns a summary with ``schema`` and ``describe()``.
        validate_spec: Raises ``BadSpecError`` for a spec that cannot be built on a schema.
        smoke_step: Trains a spec briefly on a few rows; its loss.
        training_bytes: A spec's memory estimate on a schema.
        memory_limit: The memory training may use on this host, in bytes.
    """

    inspect_data: Callable[[DatasetRef, ModelSpec], Any]
    validate_spec: Callable[[ModelSpec, Any], None]
    smoke_step: Callable[[ModelSpec, DatasetRef], float]
    training_bytes: Callable[[ModelSpec, Any], int]
    memory_limit: Callable[[], int]
    safety_share: float = 0.8


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
        """Data, specs, a smoke step, memory, cost and access, each with what was found."""
        request, plan, ports = inp.request, inp.plan, self._ports
        items: list[PreflightItem] = []

        def add(item: PreflightItem) -> None:
            items.append(item)
            if activity.in_activity():
                activity.heartbeat(item.check)

        summary = None
        try:
            summary = ports.inspect_data(request.dataset, request.baseline)
            add(PreflightItem(check="data", ok=True, detail=summary.describe()))
        except TrainingError as err:
            add(PreflightItem(check="data", ok=False, detail=str(err), fix=DATA_FIX))

        specs: dict[str, ModelSpec] = {"baseline": request.baseline}
        problems: list[str] = []
        for h in plan.hypotheses:
            try:
                specs[h.id] = request.baseline.with_changes(h.changes)
            except ValidationError as err:
                first = err.errors()[0]
                problems.append(f"{h.id}: {'.'.join(map(str, first['loc']))}: {first['msg']}")
        if summary is not None:
            for name, spec in list(specs.items()):
                try:
                    ports.validate_spec(spec, summary.schema)
                except TrainingError as err:
                    problems.append(f"{name}: {err}")
                    del specs[name]
        add(
            PreflightItem(
                check="specs",
                ok=not problems,
                detail="; ".join(problems)
                or f"the baseline and {len(plan.hypotheses)} hypotheses build"
                + ("" if summary else " (checked without the data's schema)"),
                fix="revise the plan (`rea campaign revise --drop ID`) or fix the baseline"
                if problems
                else "",
            )
        )

        if summary is None:
            add(PreflightItem(check="smoke_step", ok=False, detail="not run: the data failed"))
        else:
            try:
                loss = ports.smoke_step(request.baseline, request.dataset)
                add(
                    PreflightItem(
                        check="smoke_step",
                        ok=True,
                        detail=f"the baseline trained on a few rows (loss {loss:.4g})",
                    )
                )
            except TrainingError as err:
                add(PreflightItem(check="smoke_step", ok=False, detail=str(err)))

        if summary is None:
            add(PreflightItem(check="memory", ok=False, detail="not estimated: the data failed"))
        else:
            limit = ports.memory_limit()
            needs = {n: ports.training_bytes(s, summary.schema) for n, s in specs.items()}
            largest = max(needs, key=lambda n: needs[n])
            over = sorted(n for n, b in needs.items() if b > ports.safety_share * limit)
            add(
                PreflightItem(
                    check="memory",
                    ok=not over,
                    detail=f"largest: {largest} needs {needs[largest] / GIB:.2f} GiB of "
                    f"{ports.safety_share:.0%} x {limit / GIB:.1f} GiB"
                    + (f"; too large: {', '.join(over)}" if over else ""),
                    fix="drop them (`rea campaign revise --drop`) or run on a larger host"
                    if over
                    else "",
                )
            )

        budget = plan.budget_device_hours or request.budget.device_hours
        high = plan.estimated_device_hours_high
        if plan.estimated_device_hours_per_trial == 0.0:
            add(
                PreflightItem(
                    check="cost",
                    ok=False,
                    detail="not measured: the data could not be read when planning",
                    fix="fix the data, then `rea campaign preflight` re-plans and measures",
                )
            )
        else:
            add(
                PreflightItem(
                    check="cost",
                    ok=high <= budget,
                    detail=f"estimated up to {high:.4g} of {budget:g} device-hours",
                    fix="" if high <= budget else "revise with fewer hypotheses or more hours",
                )
            )

        reads = access.readable(request.access, request.dataset)
        writes = access.writable(request.access, self._data_dir)
        outside = bool(request.dataset.path) and not access.inside(
            Path(request.dataset.path), reads
        )
        add(
            PreflightItem(
                check="access",
                ok=not outside,
                detail=f"reads {[str(p) for p in reads] or ['generated or shipped data only']}; "
                f"writes {[str(p) for p in writes]}",
                fix=f"add {request.dataset.path} to CampaignRequest.access.read" if outside else "",
            )
        )
        return PreflightReport(items=items)


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
