"""torchrun entry point: one process of a distributed training run.

Usage::

    torchrun --nproc-per-node 2 -m ranking_models.distributed_main \\
        --spec spec.json --out result.json

``spec.json`` holds ``{"model": ModelSpec, "dataset": DatasetRef}``. Rank 0 writes
``result.json``: ``DistributedOutcome.to_json()``, or on a typed training error
``{"error_type", "message", ...}`` (and the process exits with status 1).
"""

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from contracts import DatasetRef, ModelSpec
from ranking_models.distributed import error_to_json, rank_error_path
from ranking_models.distributed_rank import train_rank
from ranking_models.errors import TrainingError

# TorchRec 1.8 builds its DDP with an argument torch 2.13 deprecates; nothing of ours.
warnings.filterwarnings(
    "ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning
)


def main(argv: list[str] | None = None) -> int:
    """Runs this rank's share of the run; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True, help="JSON: model and dataset")
    parser.add_argument("--out", type=Path, required=True, help="where rank 0 writes results")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    model = ModelSpec.model_validate(spec["model"])
    dataset = DatasetRef.model_validate(spec.get("dataset", {}))
    rank = int(os.environ.get("RANK", "0"))
    try:
        outcome = train_rank(model, dataset)
    except TrainingError as e:
        # Every rank writes its own: the first rank to fail makes torchrun stop the others,
        # rank 0 included, possibly before rank 0 has written anything.
        _write(rank_error_path(args.out, rank), error_to_json(e))
        print(f"rank {rank}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if outcome is not None:
        _write(args.out, outcome.to_json())
    return 0


def _write(path: Path, data: dict) -> None:
    # Written then renamed, so a reader never sees half a file.
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(data, indent=2))
    partial.replace(path)


if __name__ == "__main__":
    code = main()
    # Skip interpreter finalization: a native thread of the process group (gloo, the TCP
    # store) that is still joinable then calls std::terminate ("terminate called without an
    # active exception", SIGABRT), and torchrun kills the other ranks, which lose a finished
    # run. Everything this process had to say is written and flushed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
