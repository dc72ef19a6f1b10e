"""Cost model: work per sample from the spec, seconds on this host, GPU-hours elsewhere.

Two estimates of one trial:

* ``estimate_seconds_range`` (the planner's, on this host): times short real training
  and evaluation steps of the spec on the dataset and extrapolates to every step of every
  epoch, plus the trial's fixed costs, each measured: building the model and its
  optimizers, checking the data, and reading streamed data (a block read and parsed,
  times the rows every pass reads); ``estimate_seconds`` is its low (typical) end.
  ``activities.estimates`` corrects it by what past trials on the same data cost. At
  MovieLens scale a step is dominated by per-op overhead, which no FLOP count predicts,
  so measuring the real step is the honest way. The calibration is made robust to other
  processes on the host (see ``_measured_seconds``). Measurements are cached per
  (spec, dataset) for the process.
* ``estimate_gpu_hours`` (for budgets on hardware we do not have): a roofline from the
  analytic ``work_per_sample`` (FLOPs of the dense MLPs, interaction and over arch,
  forward and backward; bytes of embedding rows read by lookups and read/written by the
  sparse optimizer) under a named GPU profile, plus a per-step launch overhead.

``python -m ranking_models.cost`` compares ``estimate_seconds`` with measured training
on MovieLens-100k for a few specs and prints the relative errors.
"""

import functools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F

from contracts import DatasetRef, ModelSpec
from ranking_models import memory
from ranking_models.data import Batch, CtrDataset, Split, StreamingSplit
from ranking_models.datasets import check_data, load_dataset
from ranking_models.dlrm import build_model, dense_parameters, interaction_width
from ranking_models.optim import dense_optimizer
from ranking_models.trainer import EVAL_BATCH_SIZE

# Bookkeeping per trial beyond what is measured (progress reports, the final checkpoint).
FIXED_OVERHEAD_S = 0.1
# Calibration: untimed steps (allocator, caches), then up to TIMED_STEPS timed ones. Many
# short steps rather than a few: under load only some of them run undisturbed, and the
# low quantile needs enough of those to find the machine's speed.
WARMUP_STEPS = 3
TIMED_STEPS = 24
# Timed evaluation passes of one EVAL_BATCH_SIZE batch (after one warm-up pass).
EVAL_PASSES = 5
# Wall seconds of timed steps per way of running them, past MIN_TIMED_STEPS: bounds the
# calibration of big specs, and of any spec on a host so loaded that a step takes 100x.
CALIBRATION_BUDGET_S = 1.0
MIN_TIMED_STEPS = 3
# The estimate's low end (the point estimate) and high end, as quantiles of the timed
# steps. Load only ever adds time to a step, so the fast end of the timings is the
# machine's own speed; a low quantile rather than the minimum, so that one freak fast
# timing cannot set it. The median shows how much slower a typical step ran.
LOW_QUANTILE = 0.1
HIGH_QUANTILE = 0.5

_T = TypeVar("_T")
# One calibration at a time per process: two at once would slow each other's steps, and
# the thread-count switch of ``_single_threaded`` must not interleave with another.
_CALIBRATION_LOCK = threading.Lock()


@dataclass(frozen=True)
class Work:
    """Work of one training sample (forward + backward + optimizer).

    Attributes:
        flops: Floating-point operations (a multiply-add counts 2).
        bytes: Memory traffic of the embedding rows and their optimizer state.
    """

    flops: float
    bytes: float


@dataclass(frozen=True)
class GpuProfile:
    """Published peaks of one accelerator and how much of them DLRM training reaches.

    Attributes:
        name: The accelerator.
        peak_flops: Dense peak FLOP/s at the training precision (fp32 via TF32 here).
        hbm_bytes_per_s: Peak memory bandwidth.
        efficiency: Share of both peaks small DLRM kernels reach.
        step_overhead_s: Launch and host overhead per training step.
    """

    name: str
    peak_flops: float
    hbm_bytes_per_s: float
    efficiency: float = 0.3
    step_overhead_s: float = 1.5e-3


GPU_PROFILES: dict[str, GpuProfile] = {
    # NVIDIA datasheets (SXM, dense, no sparsity): TF32 tensor-core FLOP/s and HBM bandwidth.
    "H100": GpuProfile("H100", peak_flops=494e12, hbm_bytes_per_s=3.35e12),
    "H200": GpuProfile("H200", peak_flops=494e12, hbm_bytes_per_s=4.8e12),
    "A100": GpuProfile("A100", peak_flops=156e12, hbm_bytes_per_s=2.0e12),
}

# Bytes of optimizer state read and written per looked-up element (fp32 state).
_STATE_BYTES_PER_ELEMENT = {"rowwise_adagrad": 0.0, "sgd": 0.0, "adam": 16.0}
_ROW_STATE_BYTES = {"rowwise_adagrad": 8.0, "sgd": 0.0, "adam": 0.0}


def _mlp_flops(width: int, layers: list[int]) -> float:
    total = 0.0
    for out in layers:
        total += 2.0 * width * out
        width = out
    return total


def work_per_sample(
    spec: ModelSpec, num_sparse: int, num_dense: int, ids_per_sample: float
) -> Work:
    """FLOPs and embedding bytes of one training sample of ``spec``.

    Backward costs twice forward for the MLPs and interaction (gradients of inputs and
    weights). Embeddings: a lookup reads each id's row; the fused optimizer reads and
    writes the row and its state.

    Args:
        spec: The model.
        num_sparse: F, the sparse features.
        num_dense: Dense feature columns.
        ids_per_sample: Mean ids looked up per sample over all sparse features.

    Returns:
        The sample's work.
    """
    d, f = spec.embedding_dim, num_sparse
    forward = _mlp_flops(num_dense, [*spec.dense_hidden, d])
    if spec.interaction == "dot":
        forward += 2.0 * (f + 1) ** 2 * d  # (F+1, D) x (D, F+1)
    elif spec.interaction == "dcn":
        w = (f + 1) * d
        per_layer = 2.0 * w * w if spec.dcn_low_rank == 0 else 4.0 * w * spec.dcn_low_rank
        forward += spec.dcn_layers * (per_layer + 3.0 * w)
    else:
        branch = [*spec.projection_hidden, spec.projection_size * d]
        forward += 2.0 * _mlp_flops((f + 1) * d, branch)
        forward += 2.0 * spec.projection_size**2 * d
    forward += _mlp_flops(interaction_width(spec, f), [*spec.over_hidden, 1])
    row_bytes = d * (2.0 if spec.embedding_precision == "fp16" else 4.0)
    opt = spec.sparse_optimizer
    per_id = (
        row_bytes  # lookup
        + 2.0 * row_bytes  # optimizer reads and writes the row
        + d * _STATE_BYTES_PER_ELEMENT[opt]
        + _ROW_STATE_BYTES[opt]
    )
    return Work(flops=3.0 * forward, bytes=ids_per_sample * per_id)


def _quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank, rounding down)."""
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def _timings(
    step: Callable[[], object], clock: Callable[[], float], warmup: int, count: int
) -> list[float]:
    """``count`` timings of ``step`` by ``clock`` after ``warmup`` untimed calls.

    Stops early, after ``MIN_TIMED_STEPS``, once ``CALIBRATION_BUDGET_S`` wall seconds
    have passed.
    """
    for _ in range(warmup):
        step()
    deadline = time.perf_counter() + CALIBRATION_BUDGET_S
    times: list[float] = []
    while len(times) < count and (len(times) < MIN_TIMED_STEPS or time.perf_counter() < deadline):
        started = clock()
        step()
        times.append(clock() - started)
    return times


def _full_batches(split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
    """Shuffled training batches, endlessly, leaving out the short last batch of a pass.

    A short batch is a faster step than the ones it would stand for, and the low quantile
    would pick it; it is kept only when the split holds no full batch at all.
    """
    generator = torch.Generator().manual_seed(seed)
    keep_short = len(split) < batch_size
    while True:
        for batch in split.batches(batch_size, generator=generator):
            if keep_short or len(batch) == batch_size:
                yield batch


def _single_threaded(fn: Callable[[], _T]) -> _T:
    """Runs ``fn`` in a new thread whose torch ops use one intra-op thread; returns its result.

    ``torch.set_num_threads`` sets the calling thread's OpenMP and MKL thread counts and
    also the process default that any thread adopts at its first parallel op. So it is
    called in a thread of our own, and the default is put back at once from a second,
    throwaway thread: ours keeps one thread, every other thread (a training run in the
    same worker included) keeps its own count; only a thread making its first parallel
    op in the instant between the two calls would start at one. Call with
    ``_CALIBRATION_LOCK`` held.
    """

    def run() -> _T:
        default = torch.get_num_threads()  # a new thread starts at the process default
        torch.set_num_threads(1)
        restore = threading.Thread(target=torch.set_num_threads, args=(default,))
        restore.start()
        restore.join()
        return fn()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cost-calibration") as pool:
        return pool.submit(run).result()


@functools.lru_cache(maxsize=256)
def _measured_seconds(
    spec_json: str, dataset_json: str
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Seconds per training step and per evaluated sample of a spec on CPU, each (low, high),
    and the seconds building the model and its optimizer took.

    The steps are timed two ways, and each quantile takes the faster of the two:

    * with this thread's intra-op thread count (what training here uses), on the wall
      clock: the trial's own speed on an idle host. On a loaded host it is no guide:
      each of the step's many parallel ops ends at an OpenMP barrier that waits for
      every thread of the team, spinning on the CPU meanwhile, and the scheduler keeps
      putting one of them aside for the other processes. With as many threads as cores
      (torch's default) and two CPU-bound processes beside them, a 3 ms step took 15 ms
      to over a second on a 2-core host; every step of a run can be slowed like that, so
      no quantile of these timings is safe.
    * with one intra-op thread, on the thread's CPU clock, which stops while the thread
      waits for a core: what a step costs the machine whoever else runs. At MovieLens
      scale one thread runs a step as fast as several (per-op overhead dominates); for
      big dense layers on many cores it is slower, and then the estimate under load is
      high by at most the speed-up of the extra threads, never by the 100x of spinning.
    """
    spec = ModelSpec.model_validate_json(spec_json)
    data = load_dataset(
        DatasetRef.model_validate_json(dataset_json), max_table_rows=spec.max_table_rows
    )
    # As the trainer does: a model that cannot fit fails here by arithmetic, typed and
    # non-retryable, instead of the planner's host allocating it to time a few steps.
    memory.check_fits(spec, data.schema)
    built = time.perf_counter()
    net = build_model(spec, data.schema, device="cpu")
    optimizer = dense_optimizer(spec, dense_parameters(net))
    build_s = time.perf_counter() - built
    eval_batch = data.validation.batch(slice(0, EVAL_BATCH_SIZE))

    def calibrate(clock: Callable[[], float]) -> tuple[list[float], list[float]]:
        batches = _full_batches(data.train, spec.batch_size, spec.seed)

        def train_step() -> None:
            batch = next(batches)  # gathering the batch is part of a step
            loss = F.binary_cross_entropy_with_logits(
                net(batch.dense, batch.sparse).squeeze(1), batch.labels
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def eval_pass() -> None:
            with torch.no_grad():
                net(eval_batch.dense, eval_batch.sparse)

        net.train()
        step_times = _timings(train_step, clock, WARMUP_STEPS, TIMED_STEPS)
        net.eval()
        eval_times = _timings(eval_pass, clock, 1, EVAL_PASSES)
        return step_times, [t / len(eval_batch) for t in eval_times]

    with _CALIBRATION_LOCK:
        wall = calibrate(time.perf_counter)
        cpu = _single_threaded(lambda: calibrate(time.thread_time))

    def low_high(index: int) -> tuple[float, float]:
        return (
            min(_quantile(wall[index], LOW_QUANTILE), _quantile(cpu[index], LOW_QUANTILE)),
            min(_quantile(wall[index], HIGH_QUANTILE), _quantile(cpu[index], HIGH_QUANTILE)),
        )

    return low_high(0), low_high(1), build_s


def _read_seconds_per_row(data: CtrDataset) -> float:
    """Seconds to read and parse one row of streamed data (0 for data held in memory).

    Times reading the first training block as a trial's first pass does; a source that
    keeps parsed blocks (small tables) answers later reads from memory, as it will for
    the trial.
    """
    split = data.train
    if not isinstance(split, StreamingSplit):
        return 0.0
    started = time.perf_counter()
    rows = len(split.source.block(0))
    return (time.perf_counter() - started) / max(rows, 1)


def fixed_seconds(spec: ModelSpec, dataset: DatasetRef) -> dict[str, float]:
    """The measured per-trial costs beside the steps, by part (seconds).

    ``build``: the model and its optimizers; ``check``: the data checks a trial runs
    first (``check_data``, the base rate); ``read``: streamed rows read and parsed over
    every pass (train each epoch, validation each epoch, test once); ``other``:
    ``FIXED_OVERHEAD_S``. Measured once per (spec, dataset) and process, as the steps are.
    """
    return dict(_fixed_seconds(spec.model_dump_json(), dataset.model_dump_json()))


@functools.lru_cache(maxsize=256)
def _fixed_seconds(spec_json: str, dataset_json: str) -> tuple[tuple[str, float], ...]:
    spec = ModelSpec.model_validate_json(spec_json)
    dataset = DatasetRef.model_validate_json(dataset_json)
    data = load_dataset(dataset, max_table_rows=spec.max_table_rows)
    _, _, build_s = _measured_seconds(spec_json, dataset_json)
    started = time.perf_counter()
    check_data(data)
    check_s = time.perf_counter() - started
    rows_read = spec.epochs * (len(data.train) + len(data.validation)) + len(data.test)
    return (
        ("build", build_s),
        ("check", check_s),
        ("read", _read_seconds_per_row(data) * rows_read),
        ("other", FIXED_OVERHEAD_S),
    )


def estimate_seconds_range(spec: ModelSpec, dataset: DatasetRef) -> tuple[float, float]:
    """Estimated wall seconds of one trial of ``spec`` on ``dataset`` on this host (CPU).

    Times short real steps of the spec (cached per process; robust to other processes on
    the host, see ``_measured_seconds``) and extrapolates to ``epochs`` passes over the
    train split, one validation pass per epoch and a test pass, plus the measured fixed
    costs (``fixed_seconds``).

    Args:
        spec: The model.
        dataset: The data.

    Returns:
        (low, high) seconds: low from the fast end of the timed steps (``LOW_QUANTILE``),
        the trial's speed on an idle host; high from their ``HIGH_QUANTILE``, a typical
        step. ``low <= high``.

    Raises:
        BadDataError: The data is missing or malformed.
        BadSpecError: The spec cannot be built on this data.
        OutOfMemoryError: The model cannot fit in this host's memory (see
            ``memory.check_fits``; checked before it is built).
    """
    (train_low, train_high), (rest_low, rest_high) = _trial_parts(spec, dataset)
    return train_low + rest_low, train_high + rest_high


def fraction_fixed_share(spec: ModelSpec, dataset: DatasetRef) -> float:
    """The share of a trial's estimated seconds (the typical end) that training on a
    fraction of the data does not shrink: its fixed costs and its evaluation passes.

    Raises:
        As ``estimate_seconds_range``.
    """
    (train, _), (rest, _) = _trial_parts(spec, dataset)
    return rest / (train + rest) if train + rest > 0 else 0.0


def _trial_parts(
    spec: ModelSpec, dataset: DatasetRef
) -> tuple[tuple[float, float], tuple[float, float]]:
    """A trial's estimated seconds, (low, high), of its training steps and of the rest."""
    data = load_dataset(dataset, max_table_rows=spec.max_table_rows)
    step_s, eval_sample_s, _ = _measured_seconds(spec.model_dump_json(), dataset.model_dump_json())
    fixed = sum(fixed_seconds(spec, dataset).values())
    steps = spec.epochs * data.train.num_batches(spec.batch_size)
    eval_samples = spec.epochs * len(data.validation) + len(data.test)
    train = (steps * step_s[0], steps * step_s[1])
    rest = (fixed + eval_samples * eval_sample_s[0], fixed + eval_samples * eval_sample_s[1])
    return train, rest


def estimate_seconds(spec: ModelSpec, dataset: DatasetRef) -> float:
    """Estimated wall seconds of one trial on this host: the low end of the range.

    See ``estimate_seconds_range``; this is its first element.
    """
    return estimate_seconds_range(spec, dataset)[0]


def estimate_gpu_hours(spec: ModelSpec, dataset: DatasetRef, gpu: str = "H100") -> float:
    """Estimated device-hours of one trial on one GPU of a named profile.

    A roofline per sample (the slower of FLOPs at ``efficiency`` x peak and bytes at
    ``efficiency`` x HBM bandwidth; evaluation counts one third of a training sample)
    plus ``step_overhead_s`` per step and ``FIXED_OVERHEAD_S``.

    Args:
        spec: The model.
        dataset: The data.
        gpu: A key of ``GPU_PROFILES``.

    Raises:
        KeyError: Unknown profile; the message lists the known ones.
    """
    if gpu not in GPU_PROFILES:
        raise KeyError(f"unknown GPU profile {gpu!r}; known: {sorted(GPU_PROFILES)}")
    profile = GPU_PROFILES[gpu]
    data = load_dataset(dataset, max_table_rows=spec.max_table_rows)
    work = work_per_sample(
        spec, len(data.schema.sparse_features), data.schema.num_dense, data.ids_per_sample
    )
    per_sample = max(
        work.flops / (profile.peak_flops * profile.efficiency),
        work.bytes / (profile.hbm_bytes_per_s * profile.efficiency),
    )
    steps = spec.epochs * data.train.num_batches(spec.batch_size)
    samples = (
        spec.epochs * len(data.train) + (spec.epochs * len(data.validation) + len(data.test)) / 3
    )
    seconds = FIXED_OVERHEAD_S + samples * per_sample + steps * profile.step_overhead_s
    return seconds / 3600.0


REPORT_SPECS: dict[str, dict[str, object]] = {
    "dot": {},
    "dcn full": {"interaction": "dcn", "epochs": 1},
    "dcn low-rank": {"interaction": "dcn", "dcn_low_rank": 8, "batch_size": 256},
    "projection": {"interaction": "projection", "embedding_dim": 32},
    "wide adam fp16": {
        "over_hidden": [256, 128],
        "sparse_optimizer": "adam",
        "embedding_precision": "fp16",
        "batch_size": 1024,
        "epochs": 3,
    },
}


def report_errors(dataset: DatasetRef | None = None) -> list[tuple[str, float, float]]:
    """(name, estimated s, measured s) of each ``REPORT_SPECS`` spec, training for real."""
    from ranking_models.trainer import train

    dataset = dataset or DatasetRef()
    rows = []
    for name, change in REPORT_SPECS.items():
        spec = ModelSpec().with_changes(change)
        load_dataset(dataset, max_table_rows=spec.max_table_rows)  # data loading is cached
        estimate = estimate_seconds(spec, dataset)
        measured = train(spec, dataset, device="cpu").duration_s
        rows.append((name, estimate, measured))
    return rows


if __name__ == "__main__":
    for name, estimate, measured in report_errors():
        error = (estimate - measured) / measured
        print(f"{name:16s} estimated {estimate:6.2f}s measured {measured:6.2f}s error {error:+.0%}")
