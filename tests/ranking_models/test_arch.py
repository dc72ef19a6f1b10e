"""Our faster arch modules against TorchRec's own, forward and backward."""

import torch
from torchrec.models.dlrm import InteractionArch

from ranking_models.arch import DotInteractionArch


def test_dot_interaction_matches_torchrec() -> None:
    torch.manual_seed(0)
    batch, features, dim = 5, 4, 8
    dense = torch.randn(batch, dim, dtype=torch.float64, requires_grad=True)
    sparse = torch.randn(batch, features, dim, dtype=torch.float64, requires_grad=True)
    ours, theirs = DotInteractionArch(num_sparse_features=features), InteractionArch(features)

    out, expected = ours(dense, sparse), theirs(dense, sparse)
    weights = torch.randn_like(expected)
    grads = torch.autograd.grad((out * weights).sum(), (dense, sparse))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (dense, sparse))

    torch.testing.assert_close(out, expected)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)
