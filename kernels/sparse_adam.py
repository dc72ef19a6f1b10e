"""Lazy (row-sparse) Adam for embedding tables on CPU, where FBGEMM has no Adam kernel.

FBGEMM's ``EmbOptimType.ADAM`` runs on CUDA only; its CPU TBE accepts just the SGD and
Adagrad families. On CPU the fused module therefore looks rows up with FBGEMM's kernel
and applies Adam here, in backward, to the rows the batch touched, with FBGEMM's
semantics: gradients of repeated ids are summed first, one step counter is shared by all
rows, untouched rows keep their weights and moments.
"""

from collections.abc import Sequence

import torch


def pooled_row_gradients(
    grad_pooled: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    feature_table: Sequence[int],
    dim_offsets: Sequence[int],
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """The exact gradient of sum pooling with respect to each looked-up row.

    Args:
        grad_pooled: (B, sum of D_f) gradient of the loss with respect to the pooled output.
        indices: Row ids of every bag, feature-major (the TBE/KJT layout).
        offsets: (F * B + 1,) bag boundaries into ``indices``.
        feature_table: For each of the F features, the table it reads.
        dim_offsets: F + 1 column offsets of each feature in ``grad_pooled``.

    Returns:
        For each table touched: (unique row ids (U,), summed gradients (U, D)).
    """
    batch = grad_pooled.shape[0]
    lengths = offsets[1:] - offsets[:-1]  # (F * B,)
    ids_per_table: dict[int, list[torch.Tensor]] = {}
    grads_per_table: dict[int, list[torch.Tensor]] = {}
    for f, t in enumerate(feature_table):
        start, end = int(offsets[f * batch]), int(offsets[(f + 1) * batch])
        bag = torch.repeat_interleave(
            torch.arange(batch, device=indices.device), lengths[f * batch : (f + 1) * batch]
        )  # (nnz_f,) example of each id
        grad_f = grad_pooled[:, dim_offsets[f] : dim_offsets[f + 1]]  # (B, D)
        ids_per_table.setdefault(t, []).append(indices[start:end])
        grads_per_table.setdefault(t, []).append(grad_f[bag])  # (nnz_f, D)
    out = {}
    for t, ids in ids_per_table.items():
        unique, inverse = torch.unique(torch.cat(ids), return_inverse=True)
        grads = torch.cat(grads_per_table[t])
        summed = torch.zeros(
            unique.numel(), grads.shape[1], dtype=torch.float32, device=grads.device
        )
        summed.index_add_(0, inverse, grads.float())
        out[t] = (unique, summed)
    return out


def adam_rows_update(
    weight: torch.Tensor,
    rows: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    step: int,
    learning_rate: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """One Adam step on ``rows`` of a table, in place (FBGEMM's ADAM, no weight decay).

    Args:
        weight: (rows, D) table, fp32 or fp16; the update is computed in fp32 and rounded.
        rows: (U,) unique row ids to update.
        grad: (U, D) summed gradient of each row.
        exp_avg: (rows, D) first moment, fp32, updated in place.
        exp_avg_sq: (rows, D) second moment, fp32, updated in place.
        step: The 1-based step number, for bias correction.
        learning_rate: Step size.
        beta1: First-moment decay.
        beta2: Second-moment decay.
        eps: Added to the square root of the corrected second moment.
    """
    with torch.no_grad():
        m = exp_avg[rows].mul_(beta1).add_(grad, alpha=1.0 - beta1)  # (U, D)
        v = exp_avg_sq[rows].mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)  # (U, D)
        exp_avg[rows] = m
        exp_avg_sq[rows] = v
        m_hat = m / (1.0 - beta1**step)
        v_hat = v / (1.0 - beta2**step)
        new = weight[rows].float() - learning_rate * m_hat / (v_hat.sqrt() + eps)
        weight[rows] = new.to(weight.dtype)


class _AdamInBackward(torch.autograd.Function):
    """Identity on the pooled output whose backward steps Adam on the looked-up rows."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        placeholder: torch.Tensor,
        pooled: torch.Tensor,
        indices: torch.Tensor,
        offsets: torch.Tensor,
        owner: "CpuSparseAdam",
    ) -> torch.Tensor:
        ctx.save_for_backward(indices, offsets)
        ctx.owner = owner  # type: ignore[attr-defined]
        return pooled.clone()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_pooled: torch.Tensor
    ) -> tuple[None, ...]:
        indices, offsets = ctx.saved_tensors  # type: ignore[attr-defined]
        ctx.owner.step(grad_pooled, indices, offsets)  # type: ignore[attr-defined]
        return None, None, None, None, None


class CpuSparseAdam:
    """Adam state for a set of tables, stepped from the pooled output's gradient.

    Args:
        weights: One (rows, D) view per table, updated in place.
        feature_table: For each feature, the table it reads.
        learning_rate: Step size.
        eps: Added to the square root of the corrected second moment.
        beta1: First-moment decay.
        beta2: Second-moment decay.
    """

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        feature_table: Sequence[int],
        *,
        learning_rate: float,
        eps: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
    ) -> None:
        self.weights = list(weights)
        self.feature_table = list(feature_table)
        dims = [self.weights[t].shape[1] for t in self.feature_table]
        self.dim_offsets = [0]
        for d in dims:
            self.dim_offsets.append(self.dim_offsets[-1] + d)
        self.learning_rate = learning_rate
        self.eps, self.beta1, self.beta2 = eps, beta1, beta2
        self.exp_avg = [torch.zeros(w.shape, dtype=torch.float32) for w in self.weights]
        self.exp_avg_sq = [torch.zeros(w.shape, dtype=torch.float32) for w in self.weights]
        self.steps = 0
        self.placeholder = torch.zeros(0, requires_grad=True)

    def attach(
        self, pooled: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor
    ) -> torch.Tensor:
        """Returns ``pooled`` wired so that backward steps Adam on the looked-up rows."""
        return _AdamInBackward.apply(self.placeholder, pooled, indices, offsets, self)

    def step(self, grad_pooled: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor) -> None:
        """One Adam step from the gradient of the (B, sum D_f) pooled output."""
        self.steps += 1
        grads = pooled_row_gradients(
            grad_pooled, indices, offsets, self.feature_table, self.dim_offsets
        )
        for t, (rows, grad) in grads.items():
            adam_rows_update(
                self.weights[t],
                rows,
                grad,
                self.exp_avg[t],
                self.exp_avg_sq[t],
                step=self.steps,
                learning_rate=self.learning_rate,
                beta1=self.beta1,
                beta2=self.beta2,
                eps=self.eps,
            )
