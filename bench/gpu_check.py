"""GPU check: train a DLRM on CUDA, check it against the CPU, print samples/s and memory.

    make gpu-check          # or: python3 bench/gpu_check.py [--device cuda] [--steps 20]

Needs only PyTorch (no Temporal, no openrea install): a plain-torch DLRM (one embedding
table per sparse feature, bottom MLP, dot interaction, top MLP, Criteo's 13 dense and 26
sparse features) trained with SGD on synthetic clicks. Where ``torchrec`` and
``fbgemm_gpu`` import (``pip install fbgemm-gpu==1.8.0`` and ``torchrec==1.8.0
--no-deps``), openrea's own model (``ranking_models.dlrm``, FBGEMM's fused table-batched
embeddings on the GPU) is measured too.

1. Numerics: the same seeded model and batch on the CPU and on the device, one forward,
   backward and SGD step each (TF32 off): the largest differences of the logits, the loss
   and the updated weights must stay within ``TOLERANCE``.
2. Speed: training steps at batch sizes 512 ... 65,536 on the device and on the CPU
   (``--cpu-max-batch`` bounds the CPU's), samples/s and the device's peak memory.

Without CUDA it prints one line saying so and exits 0 (``--device cpu`` runs every part on
the CPU, for tests).
"""

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

BATCHES = (512, 2048, 8192, 32768, 65536)
TOLERANCE = 1e-4
NUM_DENSE, NUM_SPARSE, ROWS, DIM = 13, 26, 100_000, 16


class PlainDlrm(nn.Module):
    """DLRM in plain torch: (B, 13) dense and (B, 26) ids -> (B,) logits."""

    def __init__(self, rows: int = ROWS, dim: int = DIM) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(rows, dim) for _ in range(NUM_SPARSE))
        self.bottom = nn.Sequential(nn.Linear(NUM_DENSE, 64), nn.ReLU(), nn.Linear(64, dim))
        pairs = (NUM_SPARSE + 1) * NUM_SPARSE // 2
        self.top = nn.Sequential(nn.Linear(dim + pairs, 64), nn.ReLU(), nn.Linear(64, 1))
        self._upper = torch.triu_indices(NUM_SPARSE + 1, NUM_SPARSE + 1, offset=1)

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)  # (B, D)
        vectors = torch.stack([x, *(t(ids[:, f]) for f, t in enumerate(self.tables))], 1)
        dots = vectors @ vectors.transpose(1, 2)  # (B, F+1, F+1)
        i, j = self._upper.to(dots.device)
        return self.top(torch.cat([x, dots[:, i, j]], 1)).squeeze(1)


def batch(size: int, seed: int = 0, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """Synthetic (dense, ids, labels): Zipf-like ids, clicks from a planted rule."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(size, NUM_DENSE, generator=g)
    ids = (torch.rand(size, NUM_SPARSE, generator=g) ** 3 * ROWS).long()
    labels = ((ids[:, 0] % 7 < 2) ^ (dense[:, 0] > 0.8)).float()
    return dense.to(device), ids.to(device), labels.to(device)


def one_step(model: nn.Module, data: tuple[torch.Tensor, ...], lr: float = 0.1) -> float:
    """One SGD step on ``data``; the loss before it."""
    dense, ids, labels = data
    loss = nn.functional.binary_cross_entropy_with_logits(model(dense, ids), labels)
    model.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad
    return float(loss.detach())


def numerics(device: str, rows: int = 1000) -> dict[str, float]:
    """Largest |CPU - device| differences of one step of the same model on the same batch."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    cpu = PlainDlrm(rows=rows)
    other = PlainDlrm(rows=rows).to(device)
    other.load_state_dict(cpu.state_dict())
    data = batch(256)
    data = (data[0], data[1] % rows, data[2])
    with torch.no_grad():
        logits = (cpu(*data[:2]) - other(*(t.to(device) for t in data[:2])).cpu()).abs().max()
    loss = abs(one_step(cpu, data) - one_step(other, tuple(t.to(device) for t in data)))
    with torch.no_grad():
        weights = max(
            float((a - b.cpu()).abs().max())
            for a, b in zip(cpu.parameters(), other.parameters(), strict=True)
        )
    return {"logits": float(logits), "loss": loss, "weights": weights}


def speed(model: nn.Module, device: str, size: int, steps: int) -> tuple[float, float]:
    """Samples/s of training steps at batch ``size``, and the peak device memory (GiB)."""
    data = batch(size, device=device)
    cuda = device.startswith("cuda")
    one_step(model, data)  # warm-up: kernels, allocator
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        one_step(model, data)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return size * steps / seconds, memory


def fbgemm_model(device: str) -> str:
    """openrea's own model on the device, where torchrec and FBGEMM import: its samples/s."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from contracts import DatasetRef, ModelSpec
        from contracts.dataset import SyntheticSpec
        from ranking_models.datasets import load_dataset
        from ranking_models.dlrm import build_model, dense_parameters, sparse_modules
        from ranking_models.optim import dense_optimizer
        from ranking_models.train_step import DivergenceMonitor, TrainStep
    except ImportError as err:
        return f"openrea's model (torchrec + FBGEMM): skipped, {err}"
    spec = ModelSpec(batch_size=4096, max_table_rows=ROWS)
    data = load_dataset(
        DatasetRef(name="synthetic-criteo", synthetic=SyntheticSpec(rows=50_000)),
        max_table_rows=spec.max_table_rows,
    )
    net = build_model(spec, data.schema, device=device)
    optimizer = dense_optimizer(spec, dense_parameters(net))
    monitor = DivergenceMonitor()
    step = TrainStep(spec, net, optimizer, sparse_modules(net), monitor, 100)
    batches = list(data.train.to(device).batches(spec.batch_size))[:6]
    step(batches[0], step=0)
    started = time.perf_counter()
    for i, b in enumerate(batches[1:], 1):
        step(b, step=i)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    rate = sum(len(b) for b in batches[1:]) / (time.perf_counter() - started)
    return f"openrea's model ({type(sparse_modules(net)[0]).__name__}): {rate:,.0f} samples/s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--cpu-max-batch", type=int, default=8192)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu-check: skipped, CUDA is not available here (torch {torch.__version__})")
        return 0
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"gpu-check on {name} (torch {torch.__version__})")
    diffs = numerics(args.device)
    ok = all(v <= TOLERANCE for v in diffs.values())
    print("numerics vs CPU: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
          + f" -> {'ok' if ok else 'MISMATCH'} (tolerance {TOLERANCE:g})")  # fmt: skip
    torch.backends.cuda.matmul.allow_tf32 = True  # as training runs
    torch.manual_seed(0)
    model, cpu_model = PlainDlrm().to(args.device), PlainDlrm()
    print(
        f"{'batch':>7} {'device samples/s':>17} {'peak GiB':>9} {'CPU samples/s':>14} {'x CPU':>6}"
    )
    for size in args.batches:
        rate, memory = speed(model, args.device, size, args.steps)
        cpu_rate = speed(cpu_model, "cpu", size, 3)[0] if size <= args.cpu_max_batch else None
        cpu_text = (
            f"{cpu_rate:14,.0f} {rate / cpu_rate:6.1f}" if cpu_rate else f"{'-':>14} {'-':>6}"
        )
        print(f"{size:7d} {rate:17,.0f} {memory:9.2f} {cpu_text}", flush=True)
    print(fbgemm_model(args.device))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
