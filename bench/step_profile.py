"""Where a DLRM training step's time goes, part by part (torch.profiler).

Used by ``bench/train_throughput.py`` on its fused path: a few steps run under
``torch.profiler`` with each part of TorchRec's ``DLRM`` wrapped in a labelled range
(sparse, dense and over archs, the interaction), and the loss, backward and optimizer
labelled by the step itself. Backward's autograd nodes carry no module label, so each is
put in its part by the name of its node (``AddmmBackward0`` is an MLP's, FBGEMM's lookup
function the tables', whose backward also applies the fused row-wise optimizer).
"""

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

PARTS = (
    "embedding fwd",
    "embedding bwd + fused opt",
    "interaction",
    "bottom MLP",
    "top MLP",
    "loss",
    "dense optimizer",
    "other",
)
# Forward ranges: the DLRM submodule and the part it is.
_MODULES = {
    "sparse_arch": "embedding fwd",
    "dense_arch": "bottom MLP",
    "inter_arch": "interaction",
    "over_arch": "top MLP",
}
# Backward nodes by name fragment, first match wins. MLP nodes cannot tell bottom from
# top by name; they are split between them by the two archs' forward times (see ``_split``).
_INTERACTION = (
    "Bmm", "Dots", "Index", "Cat", "Stack", "Unsqueeze", "View", "Transpose", "Permute",
    "SplitWithSizes",
)  # fmt: skip
_BACKWARD = (
    (("SplitLookup", "fbgemm", "EmbeddingBag"), "embedding bwd + fused opt"),
    (("BinaryCrossEntropy", "Squeeze", "ones_like"), "loss"),
    (_INTERACTION, "interaction"),
    (("Addmm", "MmBackward", "Relu", "Threshold", "TBackward", "AccumulateGrad"), "MLP"),
)


@contextmanager
def labelled(model: nn.Module) -> Iterator[None]:
    """Wraps each of ``model``'s DLRM archs in a profiler range named after its part."""
    handles = []
    for attr, part in _MODULES.items():
        module = getattr(model, attr, None)
        if module is None:
            continue
        ranges: list[record_function] = []

        def pre(_m: nn.Module, _a: object, part: str = part, ranges: list = ranges) -> None:
            ranges.append(record_function(f"part:{part}"))
            ranges[-1].__enter__()

        def post(_m: nn.Module, _a: object, _o: object, ranges: list = ranges) -> None:
            ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _backward_part(name: str) -> str:
    for fragments, part in _BACKWARD:
        if any(f in name for f in fragments):
            return part
    return "other"


def _part_of(name: str) -> str:
    """The part a top-level range stands for; anything outside our ranges is "other"."""
    return name.removeprefix("part:") if name.startswith("part:") else "other"


def breakdown(step: Callable[[int], float], model: nn.Module, steps: int) -> dict[str, float]:
    """Milliseconds per step by part, over ``steps`` profiled steps of ``step``.

    Args:
        step: Runs step ``i``; labels its loss, backward and optimizer with ``part(...)``.
        model: The DLRM it trains (its archs get labelled while profiling).
        steps: How many steps to profile.

    Returns:
        Milliseconds per step for each of ``PARTS`` (the profiler's own overhead included,
        so the sum exceeds an unprofiled step by a few percent).
    """
    with labelled(model), profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(i)
    totals: dict[str, float] = defaultdict(float)
    mlp = 0.0
    for event in prof.events():
        if event.cpu_parent is not None:
            continue
        part = _part_of(event.name)
        if part != "backward":
            totals[part if part in PARTS else "other"] += event.cpu_time_total
            continue
        inner = event.cpu_time_total
        for child in event.cpu_children:
            kind = _backward_part(child.name)
            inner -= child.cpu_time_total
            if kind == "MLP":
                mlp += child.cpu_time_total
            else:
                totals[kind] += child.cpu_time_total
        totals["other"] += max(0.0, inner)
    _split(totals, mlp)
    return {p: totals.get(p, 0.0) / 1e3 / steps for p in PARTS}


def _split(totals: dict[str, float], mlp_backward: float) -> None:
    """Shares the MLPs' backward between bottom and top by their forward times."""
    bottom, top = totals.get("bottom MLP", 0.0), totals.get("top MLP", 0.0)
    share = bottom / (bottom + top) if bottom + top else 0.5
    totals["bottom MLP"] = bottom + share * mlp_backward
    totals["top MLP"] = top + (1 - share) * mlp_backward


def part(name: str) -> record_function:
    """A labelled range for a part the step itself runs (loss, backward, optimizer)."""
    return record_function(f"part:{name}")
