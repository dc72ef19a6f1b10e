"""How a multi-fidelity campaign spends its budget, and what its screen decided.

The plan splits the approved budget into exploration (a successive-halving screen over a broad
pool of candidates, then a whole-space search around the leader) and evidence (paired seeds
spent where they decide, and the final confirmation); ``ExplorationPlan`` says how, so the
engineer approves the schedule along with the budget. ``RungDecision`` records one rung of
the screen compactly (a value per arm), so that thousands of screened candidates still fit
in the campaign's state.
"""

from pydantic import Field

from contracts.base import Record


class RungPlan(Record):
    """One rung of the screen's successive halving.

    Attributes:
        rung: 0 for the cheapest; the last rung trains on all the data.
        data_fraction: The share of the training split each epoch trains on.
        candidates: How many candidates run at this rung (at most; the baseline runs too).
        estimated_device_hours: Their estimated cost, baseline included.
    """

    rung: int
    data_fraction: float
    candidates: int
    estimated_device_hours: float


class ExplorationPlan(Record):
    """How a multi-fidelity campaign spends its approved budget.

    Attributes:
        budget_device_hours: The budget the schedule was sized for.
        exploration_share: The share of it for exploration (screen and tuning); the rest is
            for evidence (gates' seeds and the confirmation).
        halving_rate: Successive halving's rate: each rung keeps the best 1/rate.
        rungs: The screen's rungs, cheapest first.
        pool: Candidates screened, by source (``knowledge``, ``insights``, ``llm``,
            ``search-space``).
        tuning_trials: Trials of the whole-space search around the leader.
        tuning_device_hours: Their estimated cost.
        evidence_device_hours: What the gates and the confirmation may spend.
        gate_candidates: How many screened candidates go on to a gate.
        first_look_seeds: Seeds per arm at a gate's first look.
        max_seeds: Seeds per arm a gate may grow to while a candidate's interval straddles
            the minimum effect.
        confirm_top: How many gated candidates the final confirmation tests (ranked by the
            lower end of their interval), with a correction for testing several.
        fixed_cost_share: The share of a full trial's cost that does not shrink with its data
            fraction (loading, building, evaluation); how rungs are costed.
    """

    budget_device_hours: float
    exploration_share: float
    halving_rate: int
    rungs: list[RungPlan]
    pool: dict[str, int] = Field(default_factory=dict)
    tuning_trials: int = 0
    tuning_device_hours: float = 0.0
    evidence_device_hours: float = 0.0
    gate_candidates: int = 0
    first_look_seeds: int = 3
    max_seeds: int = 8
    confirm_top: int = 2
    fixed_cost_share: float = 0.1

    @property
    def screened(self) -> int:
        """Candidates at the first rung."""
        return self.rungs[0].candidates if self.rungs else 0


class RungDecision(Record):
    """One rung of the screen, decided: every arm's value and which went on.

    Attributes:
        rung: The rung (0 is the cheapest).
        data_fraction: Its fidelity.
        seed: The seed its runs trained with (one for the whole screen, the baseline's too,
            so values at a rung are paired).
        baseline: The baseline's validation value at this rung (None when it failed).
        values: Each screened arm's validation value (None: failed, diverged or pruned).
        promoted: The arms that go on (to the next rung, or from the last one to a gate),
            best first.
    """

    rung: int
    data_fraction: float
    seed: int
    baseline: float | None = None
    values: dict[str, float | None] = Field(default_factory=dict)
    promoted: list[str] = Field(default_factory=list)


class KnownPoint(Record):
    """A point already measured, told to a new search study before it samples.

    Attributes:
        changes: The point as changes to the baseline.
        value: Its validation metric (on the study's seed and fidelity).
    """

    changes: dict[str, object]
    value: float
