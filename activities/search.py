"""Optuna ask-and-tell over RDB storage: exploitation's tuning of the best candidate's knobs.

The workflow asks for moves, launches the trials, asks whether to prune them after each epoch
and tells the results; the study never enters workflow history. It lives in a database through
Optuna's RDB storage (an SQLite file under the data dir by default, PostgreSQL by URL), so a
restarted worker, or any worker, picks it up where it was.

Every activity is idempotent under Temporal retries: ask is keyed by ``AskInput.ask_id``
(stored as a trial user attribute), a repeated tell of the same outcome is a no-op, and a
step already reported is not reported again.
"""

import math
import random
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial
from sqlalchemy.engine import make_url
from temporalio import activity
from temporalio.exceptions import ApplicationError

from contracts import DEFAULT_ACTION_SPACE, ActionSpace, Knob, ModelSpec
from contracts.search import (
    AskedTrial,
    AskInput,
    PruneDecision,
    PruneInput,
    SearchSpace,
    TellInput,
)

# Optuna logs every trial at INFO; the workflow history and our own logs already say it.
optuna.logging.set_verbosity(optuna.logging.WARNING)

ASK_ID_ATTR = "openrea.ask_id"
"""Trial user attribute holding the ``ask_id`` of the ask that created the trial."""
CHANGES_ATTR = "openrea.changes"
"""Trial user attribute holding the changes returned for the trial (fixed + sampled)."""
KNOWN_ATTR = "openrea.known"
"""Trial user attribute marking a point told to the study before it sampled (``known``)."""

_STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "fail": TrialState.FAIL}


def _invalid(message: str, type_: str = "InvalidSearchSpace") -> ApplicationError:
    return ApplicationError(message, type=type_, non_retryable=True)


def knob_distributions(knob: Knob) -> dict[str, BaseDistribution]:
    """Optuna distributions of one knob, keyed by parameter name.

    A ``widths`` knob becomes ``f"{field}.depth"`` plus one width per possible layer,
    ``f"{field}.{i}"`` for ``i < max_layers``: all are sampled on every trial, so the space
    is static (TPE's multivariate model and CMA-ES need that) and only the first ``depth``
    widths are used.
    """
    if knob.kind == "categorical":
        return {knob.field: CategoricalDistribution(list(knob.choices or []))}
    assert knob.low is not None and knob.high is not None
    if knob.kind == "float":
        return {knob.field: FloatDistribution(float(knob.low), float(knob.high), log=knob.log)}
    width = IntDistribution(int(knob.low), int(knob.high), log=knob.log, step=knob.step or 1)
    if knob.kind == "int":
        return {knob.field: width}
    assert knob.min_layers is not None and knob.max_layers is not None
    dists: dict[str, BaseDistribution] = {
        f"{knob.field}.depth": IntDistribution(knob.min_layers, knob.max_layers)
    }
    dists.update({f"{knob.field}.{i}": width for i in range(knob.max_layers)})
    return dists


def search_distributions(
    space: SearchSpace, action_space: ActionSpace = DEFAULT_ACTION_SPACE
) -> dict[str, BaseDistribution]:
    """Optuna distributions of every tuned knob, after validating the space.

    Raises:
        ApplicationError: non-retryable, naming the field, when a field is not a knob, is
            tuned twice or both tuned and fixed, when a fixed change is outside the action
            space, or when a tuned knob requires a value the fixed changes contradict.
    """
    try:
        action_space.check(space.fixed)
    except ValueError as err:
        raise _invalid(f"fixed: {err}") from err
    dists: dict[str, BaseDistribution] = {}
    seen: set[str] = set()
    for field in space.fields:
        try:
            knob = action_space.knob(field)
        except ValueError as err:
            raise _invalid(str(err)) from err
        if field in seen:
            raise _invalid(f"{field}: listed twice in fields")
        if field in space.fixed:
            raise _invalid(f"{field}: both tuned and fixed")
        for required, value in knob.requires.items():
            if required in space.fixed and space.fixed[required] != value:
                raise _invalid(
                    f"{field}: needs {required}={value!r}, but fixed sets "
                    f"{required}={space.fixed[required]!r}"
                )
        seen.add(field)
        if field in space.center:
            knob = knob.around(space.center[field], space.radius)
        dists.update(knob_distributions(knob))
    return dists


def changes_from_params(
    space: SearchSpace, params: dict[str, Any], action_space: ActionSpace = DEFAULT_ACTION_SPACE
) -> dict[str, Any]:
    """The fixed changes plus the sampled values, widths reassembled into lists."""
    changes = dict(space.fixed)
    for field in space.fields:
        if action_space.knob(field).kind == "widths":
            depth = params[f"{field}.depth"]
            changes[field] = [params[f"{field}.{i}"] for i in range(depth)]
        else:
            changes[field] = params[field]
    return changes


# A campaign's exploitation runs a handful of trials, not hundreds: with Optuna's default of 10
# random start-up trials a 6-trial TPE study would be random search. Four random points are
# enough for TPE's two densities to say something; multivariate TPE models the learning rates
# jointly (they interact).
TPE_STARTUP_TRIALS = 4


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` as campaigns configure it (benchmarks use the same)."""
    if name == "tpe":
        with warnings.catch_warnings():  # "multivariate is experimental": known, and wanted
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=TPE_STARTUP_TRIALS, multivariate=True
            )
    if name == "cmaes":
        # Categorical knobs fall back to random sampling; that is expected, not worth a warning.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)


def _call_seed(seed: int, n_trials: int) -> int:
    """A seed for one ask call: fixed by the study's seed and its size.

    Each call builds a fresh sampler; seeding every one with the same ``seed`` would replay
    the same random start-up points on every call. Mixing in the number of trials so far
    keeps the moves reproducible from the study's history yet different per call.
    """
    return random.Random(f"{seed}/{n_trials}").getrandbits(32)


def _pruner() -> optuna.pruners.BasePruner:
    # Asynchronous successive halving (ASHA): a trial stops at a rung unless it is among the
    # best 1/4 there; it needs no synchronisation between trials, which run in parallel.
    return optuna.pruners.SuccessiveHalvingPruner()


def params_of(spec: ModelSpec, dists: dict[str, BaseDistribution]) -> dict[str, Any] | None:
    """``spec`` as the study's parameters, or None when it lies outside the searched space.

    Widths knobs are a depth plus one width per possible layer (see ``knob_distributions``);
    layers past the spec's depth are unused, so any value in range stands for them.
    """
    params: dict[str, Any] = {}
    for name, dist in dists.items():
        field_name, _, part = name.partition(".")
        value = getattr(spec, field_name)
        if part == "depth":
            value = len(value)
        elif part:
            index = int(part)
            value = value[index] if index < len(value) else dist.low  # type: ignore[attr-defined]
        try:  # _contains: Optuna's own range-and-grid check, private but stable since 2.x
            inside = dist._contains(dist.to_internal_repr(value))
        except ValueError:  # a categorical value outside the choices
            inside = False
        if not inside:
            return None
        params[name] = value
    return params


def _tell_known(study: optuna.Study, inp: AskInput, dists: dict[str, BaseDistribution]) -> None:
    """Add the points already measured to a new study, as finished trials: the sampler then
    models what the screen found. A point outside the space (a width past its range) is
    left out; without a baseline to apply the changes to there is nothing to tell."""
    if inp.baseline is None:
        return
    for point in inp.known:
        try:
            spec = inp.baseline.with_changes(point.changes)
        except ValueError:
            continue
        params = params_of(spec, dists)
        if params is not None and math.isfinite(point.value):
            trial = create_trial(params=params, distributions=dists, value=point.value)
            trial.set_user_attr(KNOWN_ATTR, True)
            study.add_trial(trial)


class SearchActivities:
    """Ask-and-tell activities over one Optuna RDB storage.

    Args:
        storage_url: SQLAlchemy URL of the study database, e.g.
            ``sqlite:///.rea/optuna.sqlite`` or ``postgresql+psycopg://user@host/db``.
    """

    def __init__(self, storage_url: str) -> None:
        self._storage_url = storage_url
        self._storage: optuna.storages.RDBStorage | None = None

    def _rdb(self) -> optuna.storages.RDBStorage:
        # Built on first use, so a worker starts even while the database is briefly away;
        # the activity then fails and Temporal retries it.
        if self._storage is None:
            url = make_url(self._storage_url)
            engine_kwargs: dict[str, Any] = {}
            if url.get_backend_name() == "sqlite" and url.database:
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
                # Activities run on several threads; wait for the file lock, not fail.
                engine_kwargs = {"connect_args": {"timeout": 30}}
            self._storage = optuna.storages.RDBStorage(
                self._storage_url, engine_kwargs=engine_kwargs
            )
        return self._storage

    def _load(self, study_name: str) -> optuna.Study:
        try:
            return optuna.load_study(
                study_name=study_name,
                storage=self._rdb(),
                sampler=optuna.samplers.RandomSampler(),  # unused: tell and prune sample nothing
                pruner=_pruner(),
            )
        except KeyError as err:
            raise _invalid(f"study_name: no study {study_name!r}", "StudyNotFound") from err

    def _trial(self, study_name: str, number: int) -> tuple[int, FrozenTrial]:
        storage = self._rdb()
        try:
            study_id = storage.get_study_id_from_name(study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        except KeyError as err:
            raise _invalid(
                f"number: no trial {number} in study {study_name!r}", "TrialNotFound"
            ) from err
        return trial_id, storage.get_trial(trial_id)

    @activity.defn(name="search_ask")
    def ask(self, inp: AskInput) -> list[AskedTrial]:
        """Ask the study for ``inp.count`` moves, creating the study on first use.

        Idempotent: the trials already asked under ``inp.ask_id`` are returned first and
        only the missing ones are asked, so a retried attempt creates no extra trials.

        Raises:
            ApplicationError: non-retryable, naming the field, for an invalid space, or when
                the study exists with the other direction.
        """
        dists = search_distributions(inp.space)
        study = optuna.create_study(
            study_name=inp.study_name,
            storage=self._rdb(),
            load_if_exists=True,
            direction=inp.direction,
            pruner=_pruner(),
        )
        if study.direction != StudyDirection[inp.direction.upper()]:
            raise _invalid(
                f"direction: study {inp.study_name!r} is "
                f"{study.direction.name.lower()}, not {inp.direction}"
            )
        trials = study.get_trials(deepcopy=False)
        if not trials and inp.known:
            _tell_known(study, inp, dists)
            trials = study.get_trials(deepcopy=False)
        study.sampler = make_sampler(inp.sampler, _call_seed(inp.seed, len(trials)))
        asked = [
            AskedTrial(number=t.number, changes=t.user_attrs[CHANGES_ATTR])
            for t in sorted(trials, key=lambda t: t.number)
            if t.user_attrs.get(ASK_ID_ATTR) == inp.ask_id and CHANGES_ATTR in t.user_attrs
        ]
        # An attempt that died between Optuna's ask and storing our key left a RUNNING trial
        # nobody will tell. A campaign asks its own study one round at a time, so such a
        # trial can only belong to this ask: adopt it instead of asking another.
        orphans = [
            t
            for t in sorted(trials, key=lambda t: t.number)
            if t.state == TrialState.RUNNING
            and ASK_ID_ATTR not in t.user_attrs
            and set(t.params) == set(dists)
        ]
        for orphan in orphans[: max(0, inp.count - len(asked))]:
            changes = changes_from_params(inp.space, orphan.params)
            trial_id, _ = self._trial(inp.study_name, orphan.number)
            self._rdb().set_trial_user_attr(trial_id, CHANGES_ATTR, changes)
            self._rdb().set_trial_user_attr(trial_id, ASK_ID_ATTR, inp.ask_id)
            asked.append(AskedTrial(number=orphan.number, changes=changes))
        for _ in range(inp.count - len(asked)):
            trial = study.ask(dists)
            changes = changes_from_params(inp.space, trial.params)
            # Changes first, key last: a trial carrying the key always has its changes.
            trial.set_user_attr(CHANGES_ATTR, changes)
            trial.set_user_attr(ASK_ID_ATTR, inp.ask_id)
            asked.append(AskedTrial(number=trial.number, changes=changes))
        return asked

    @activity.defn(name="search_tell")
    def tell(self, inp: TellInput) -> None:
        """Report the per-epoch values, then finish the trial.

        Raises:
            ApplicationError: non-retryable when the study or trial does not exist, or when
                the trial already finished with another state or value.
        """
        study = self._load(inp.study_name)
        trial_id, frozen = self._trial(inp.study_name, inp.number)
        state = _STATES[inp.state]
        value = inp.value if state == TrialState.COMPLETE else None
        if value is not None and not math.isfinite(value):
            state, value = TrialState.FAIL, None  # Optuna's own rule, made explicit
        if frozen.state.is_finished():
            if frozen.state != state or (value is not None and frozen.value != value):
                raise _invalid(
                    f"trial {inp.number} of {inp.study_name!r} already finished as "
                    f"{frozen.state.name.lower()} (value {frozen.value}); cannot tell it "
                    f"{state.name.lower()} (value {value})",
                    "TrialAlreadyFinished",
                )
            return
        trial = optuna.trial.Trial(study, trial_id)
        for step, intermediate in enumerate(inp.intermediate, start=1):
            if step not in frozen.intermediate_values:
                trial.report(intermediate, step)
        study.tell(trial, value, state=state)

    @activity.defn(name="search_should_prune")
    def should_prune(self, inp: PruneInput) -> PruneDecision:
        """Report the value at ``inp.step`` and ask the pruner whether to stop the trial.

        Raises:
            ApplicationError: non-retryable when the study or trial does not exist.
        """
        study = self._load(inp.study_name)
        trial_id, frozen = self._trial(inp.study_name, inp.number)
        if frozen.state.is_finished():
            return PruneDecision(
                prune=frozen.state == TrialState.PRUNED,
                reason=f"trial {inp.number} already finished as {frozen.state.name.lower()}",
            )
        trial = optuna.trial.Trial(study, trial_id)
        if inp.step not in frozen.intermediate_values:
            trial.report(inp.value, inp.step)
        value = frozen.intermediate_values.get(inp.step, inp.value)
        prune = trial.should_prune()
        peers = [
            t.intermediate_values[inp.step]
            for t in study.get_trials(deepcopy=False)
            if inp.step in t.intermediate_values and t.number != inp.number
        ]
        sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
        rank = 1 + sum(sign * peer < sign * value for peer in peers)
        verdict = "stop" if prune else "continue"
        return PruneDecision(
            prune=prune,
            reason=(
                f"successive halving: {verdict}; value {value:.6g} at step {inp.step} ranks "
                f"{rank} of {len(peers) + 1} trials that reached this step"
            ),
        )
