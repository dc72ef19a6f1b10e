"""Commands that work on this machine without Temporal: a campaign's TensorBoard, one trial
trained here (`rea train`), a paired comparison of two specs (`rea compare`), what past
campaigns learned (`rea insights`) and the contracts' JSON Schema (`rea schema`)."""

import contextlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, Field

from cli.apps import ROOT, app, console, fail, load_json, load_settings, make_input
from cli.render import (
    progress_display,
    render_insights,
    render_paired_seeds,
    render_split_metrics,
)
from contracts import (
    DEFAULT_ACTION_SPACE,
    ActionSpace,
    ApproveInput,
    CampaignRequest,
    CampaignResult,
    CampaignStatus,
    ControlInput,
    ControlResult,
    DatasetRef,
    ExtendBudgetInput,
    Insight,
    InsightQuery,
    JobFinishedInput,
    LaunchProposal,
    ModelSpec,
    ResolveTrialInput,
    RevisePlanInput,
    RunbookEntry,
    TrialProgress,
    TrialSpec,
)
from contracts.base import Spec

SCHEMA_DIR = ROOT / "schema"
ACTION_SPACE_FILE = "action_space.json"
PUBLIC_MODELS: list[type[BaseModel]] = [
    ActionSpace,
    CampaignRequest,
    CampaignStatus,
    CampaignResult,
    ApproveInput,
    RevisePlanInput,
    ResolveTrialInput,
    RunbookEntry,
    ControlInput,
    ControlResult,
    ExtendBudgetInput,
    JobFinishedInput,
    TrialSpec,
    LaunchProposal,
]


@app.command("tensorboard")
def tensorboard_command(
    campaign_id: Annotated[str, typer.Argument(help="The campaign (workflow id).")],
    open_: Annotated[
        bool, typer.Option("--open", help="Run TensorBoard on it now (Ctrl-C stops it).")
    ] = False,
) -> None:
    """Print the TensorBoard command for a campaign's trials (one run per trial).

    Trials write loss per step and validation NE/AUC/log loss per epoch as they train, so
    TensorBoard shows a running campaign too.
    """
    from activities.telemetry import tensorboard_root

    folder = tensorboard_root(load_settings().data_dir).resolve() / campaign_id
    if not folder.is_dir():
        raise fail(
            f"campaign {campaign_id!r} has no TensorBoard events yet: {folder} does not exist "
            "(its trials write there once they train; check the id and --data-dir)"
        )
    # The one installed beside this Python (the tensorboard package ships it), else PATH's.
    binary = Path(sys.executable).with_name("tensorboard")
    command = [str(binary) if binary.exists() else "tensorboard", "--logdir", str(folder)]
    console.print(shlex.join(command), soft_wrap=True, markup=False, highlight=False)
    if open_:
        with contextlib.suppress(KeyboardInterrupt):
            code = subprocess.run(command, check=False).returncode
            if code:
                raise typer.Exit(code)


class LocalTrial(Spec):
    """What `rea train` reads: a model and a dataset, both optional."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    dataset: DatasetRef = Field(default_factory=DatasetRef)


# `rea train` exit codes: a diverged run is a result of its own, not an error of the tool.
EXIT_DIVERGED = 3


def eta(done: float, elapsed_s: float) -> str:
    """``ETA 12s`` (or ``1m05s``) when a share ``done`` of the work took ``elapsed_s``."""
    if done <= 0.0:
        return ""
    left = round(elapsed_s * (1.0 - done) / done)
    return f"ETA {left // 60}m{left % 60:02d}s" if left >= 60 else f"ETA {left}s"


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(help="JSON with optional 'model' and 'dataset' keys.")],
) -> None:
    """Train one trial here, without Temporal, and print its metrics.

    Exits 3 when training diverged (NaN/inf or exploding loss) and 2 on other errors.
    """
    from ranking_models.errors import DivergenceError, TrainingError
    from ranking_models.trainer import train as train_model

    trial = load_json(spec, LocalTrial, "spec")
    with progress_display(console) as progress:
        bar = progress.add_task("loading the data", total=None)
        started = time.monotonic()

        def on_progress(p: TrialProgress) -> None:
            done = p.step / max(p.total_steps, 1)
            progress.update(
                bar, completed=p.step, total=p.total_steps,
                description=f"epoch {p.epoch} loss {p.train_loss:.4f} "
                f"{eta(done, time.monotonic() - started)}",
            )  # fmt: skip

        try:
            outcome = train_model(trial.model, trial.dataset, on_progress=on_progress)
        except DivergenceError as err:
            raise fail(f"diverged: {err}", code=EXIT_DIVERGED) from None
        except TrainingError as err:
            raise fail(f"{type(err).__name__}: {err}") from None
    console.print(render_split_metrics(outcome.validation, outcome.test))
    console.print(f"{outcome.steps} steps in {outcome.duration_s:.1f}s")


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="`rea train` JSON of the baseline.")],
    candidate: Annotated[Path, typer.Argument(help="`rea train` JSON of the change to test.")],
    seeds: Annotated[int, typer.Option(min=2, max=50, help="Paired seeds (at least 2).")] = 5,
    min_effect: Annotated[
        float, typer.Option(min=0.0, help="Smallest relative gain worth launching, e.g. 0.001.")
    ] = 0.0,
) -> None:
    """Is a change a real gain or seed noise? Train both with the same seeds and compare.

    Each seed gives both models the same initialisation and data order, so the comparison is
    paired; the gain on validation NE comes with its 95% interval and a one-sided p-value.
    Test NE is shown beside it, never used to decide.
    """
    from activities.evidence import gate
    from contracts.evidence import CandidateRuns, GateInput, SeededMetric
    from ranking_models.errors import TrainingError
    from ranking_models.trainer import train as train_model

    trials = {
        "baseline": load_json(baseline, LocalTrial, "baseline"),
        "candidate": load_json(candidate, LocalTrial, "candidate"),
    }
    if trials["baseline"].dataset != trials["candidate"].dataset:
        raise fail("dataset: the two specs must train on the same dataset to be compared")
    first = trials["baseline"].model.seed
    values: dict[str, dict[int, tuple[float, float]]] = {"baseline": {}, "candidate": {}}
    with progress_display(console) as progress:
        bar = progress.add_task("training", total=2 * seeds)
        started = time.monotonic()
        for seed in range(first, first + seeds):
            for name, trial in trials.items():
                progress.update(bar, description=f"{name} seed {seed}")
                runs_done = len(values["baseline"]) + len(values["candidate"])

                def on_progress(
                    p: TrialProgress, label: str = f"{name} seed {seed}", before: int = runs_done
                ) -> None:
                    # The whole comparison's ETA: runs done plus this one's share.
                    done = (before + p.step / max(p.total_steps, 1)) / (2 * seeds)
                    progress.update(
                        bar, description=f"{label} step {p.step}/{p.total_steps} loss "
                        f"{p.train_loss:.4f} {eta(done, time.monotonic() - started)}",
                    )  # fmt: skip

                try:
                    outcome = train_model(
                        trial.model.model_copy(update={"seed": seed}),
                        trial.dataset,
                        on_progress=on_progress,
                    )
                except TrainingError as err:
                    raise fail(f"{name} seed {seed}: {type(err).__name__}: {err}") from None
                values[name][seed] = (outcome.validation.ne, outcome.test.ne)
                progress.advance(bar)
    decision = gate(
        GateInput(
            baseline=[SeededMetric(seed=s, value=v[0]) for s, v in values["baseline"].items()],
            candidates=[
                CandidateRuns(
                    hypothesis_id="candidate",
                    runs=[SeededMetric(seed=s, value=v[0]) for s, v in values["candidate"].items()],
                )
            ],
            min_effect=min_effect,
        )
    )
    console.print(render_paired_seeds(values))
    [comparison] = decision.comparisons
    verdict = (
        "beats the baseline beyond seed noise on validation (not yet confirmed on test)"
        if comparison.passed
        else "not shown to beat the baseline"
    )
    console.print(f"candidate vs baseline on validation NE: {comparison.reason}", soft_wrap=True)
    console.print(f"verdict: {verdict} ({seeds} paired seeds)")


@app.command()
def insights(
    task_like: Annotated[
        str, typer.Option(help="Weigh evidence by similarity to this campaign's task.")
    ] = "",
    family: Annotated[str, typer.Option(help="Only changes of this family.")] = "",
    min_comparisons: Annotated[int, typer.Option(help="Only changes compared this often.")] = 1,
    metric: Annotated[str, typer.Option(help="The metric whose gains are shown.")] = "ne",
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
    csv: Annotated[Path | None, typer.Option(help="Write them to this CSV file.")] = None,
) -> None:
    """What past campaigns learned: the effect of each change, pooled over similar tasks."""
    from store import InsightsStore

    store = InsightsStore(load_settings().database)
    task = None
    if task_like:
        task = store.task_of(task_like)
        if task is None:
            known = ", ".join(store.campaigns()[-5:]) or "none recorded yet"
            raise fail(f"--task-like: no task recorded for campaign {task_like!r}; known: {known}")
    query = make_input(
        InsightQuery,
        {"min_comparisons": "--min-comparisons"},
        task=task,
        family=family,
        min_comparisons=min_comparisons,
        metric=metric,
    )
    found = store.insights(query)
    if as_json:
        print(json.dumps([i.model_dump(mode="json") for i in found], indent=2))
    elif csv is not None:
        write_insights_csv(found, csv)
        console.print(f"wrote {len(found)} insight(s) to {csv}")
    else:
        console.print(render_insights(found, task_like))


def write_insights_csv(found: list[Insight], path: Path) -> None:
    """Write insights to ``path`` as CSV, one row per change (`rea insights --csv`)."""
    import csv as csv_module

    with path.open("w", newline="") as f:
        writer = csv_module.writer(f)
        writer.writerow(
            ["change", "family", "comparisons", "campaigns", "weight", "mean_gain", "gain_low",
             "gain_high", "passed", "cost_ratio", "interactions"]
        )  # fmt: skip
        for i in found:
            writer.writerow(
                [i.change, i.family, i.comparisons, i.campaigns, f"{i.weight:.4g}",
                 f"{i.mean_gain:.6g}", "" if i.gain_low is None else f"{i.gain_low:.6g}",
                 "" if i.gain_high is None else f"{i.gain_high:.6g}", i.passed,
                 f"{i.cost_ratio:.4g}",
                 "; ".join(f"{x.change} {x.excess:+.4g} (n={x.n})" for x in i.interactions)]
            )  # fmt: skip


@app.command()
def schema(
    out: Annotated[Path, typer.Option(help="Folder to write JSON Schema files into.")] = SCHEMA_DIR,
) -> None:
    """Write JSON Schema of the public contracts, for clients in other languages."""
    out.mkdir(parents=True, exist_ok=True)
    for model in PUBLIC_MODELS:
        path = out / f"{model.__name__}.json"
        path.write_text(json.dumps(public_schema(model), indent=2, sort_keys=True) + "\n")
        console.print(f"wrote {path}")
    # The knobs a trial may move and their ranges: data, for clients and research agents.
    path = out / ACTION_SPACE_FILE
    path.write_text(DEFAULT_ACTION_SPACE.model_dump_json(indent=2) + "\n")
    console.print(f"wrote {path}")


def public_schema(model: type[BaseModel]) -> dict[str, object]:
    """The JSON Schema of what crosses the wire: a spec as a client may send it (validation),
    a record as openrea sends it (serialization: computed fields such as
    ``device_hours_spent`` included, marked read-only)."""
    mode = "validation" if issubclass(model, Spec) else "serialization"
    return model.model_json_schema(mode=mode)
