"""Turns a ``ModelSpec`` into a TorchRec DLRM whose sparse part is the fused FBGEMM TBE.

The only place a ``ModelSpec`` becomes torch objects. Anything the spec allows but the
model cannot be built with raises ``BadSpecError`` naming the field, before any
training time is spent.
"""

import logging
import threading

import torch
from torch import nn
from torchrec.models.dlrm import DLRM
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.mlp import Perceptron

from contracts import ModelSpec
from kernels import FusedEmbeddingBagCollection
from ranking_models.data import FeatureSchema
from ranking_models.errors import BadSpecError

# torchrec calls torch.fx.is_fx_tracing(), which warns once per process about an API change
# that does not concern eager training; it would land in every `rea` output.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

# Row-wise Adagrad's epsilon; not part of the spec (it rarely matters at this scale).
SPARSE_EPS = 1e-8

# Dense layers initialise from the global RNG; the worker trains several trials in
# threads, so seeding and drawing must not interleave between two builds.
_GLOBAL_RNG = threading.Lock()


class DropoutOverArch(nn.Module):
    """DLRM's over arch with dropout after each hidden layer.

    TorchRec's ``OverArch`` has no dropout, so this rebuilds it from the same pieces
    (ReLU ``Perceptron`` layers, then a linear output) with ``nn.Dropout`` in between,
    and ``build_model`` swaps it in the way TorchRec's own ``DLRM_DCN`` swaps its arches.

    Args:
        in_features: Width of the interaction output.
        layer_sizes: Hidden widths followed by the output width (1 for a logit).
        dropout: Probability of zeroing a hidden activation during training.
        device: Where to allocate the parameters.

    Example::

        over = DropoutOverArch(in_features=10, layer_sizes=[8, 1], dropout=0.1)
        logits = over(torch.rand(4, 10))  # (B=4, 1)
    """

    def __init__(
        self,
        in_features: int,
        layer_sizes: list[int],
        dropout: float,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for hidden in layer_sizes[:-1]:
            layers += [Perceptron(width, hidden, device=device), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, layer_sizes[-1], device=device))
        self.model = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Maps (B, in_features) interactions to (B, layer_sizes[-1]) outputs."""
        return self.model(features)


def validate_spec(spec: ModelSpec) -> None:
    """Rejects specs the model cannot be built from.

    Args:
        spec: The model spec.

    Raises:
        BadSpecError: Naming the field and the fix.
    """
    if spec.embedding_dim % 4 != 0:
        raise BadSpecError(
            "embedding_dim",
            f"{spec.embedding_dim} is not a multiple of 4, which the fused FBGEMM "
            "embedding kernel requires; use e.g. 8, 16 or 32",
        )
    if not spec.over_hidden:
        raise BadSpecError(
            "over_hidden",
            "is empty; DLRM's over arch needs at least one hidden layer, e.g. [64, 32]",
        )


def build_model(
    spec: ModelSpec, schema: FeatureSchema, *, device: torch.device | str | None = None
) -> DLRM:
    """Builds a seeded DLRM for ``schema``'s features.

    Dense arch: ``dense_hidden + [embedding_dim]``; over arch: ``over_hidden + [1]``
    (with dropout after each hidden layer when ``spec.dropout > 0``); sparse arch: one
    fused FBGEMM table per sparse feature, trained by row-wise Adagrad at
    ``spec.sparse_lr`` inside backward.

    Args:
        spec: The model to build.
        schema: Sparse feature names, table sizes and the number of dense features.
        device: Where the model lives; default CPU.

    Returns:
        A ``DLRM`` mapping (dense (B, num_dense), sparse KJT) to logits (B, 1).

    Raises:
        BadSpecError: The spec cannot be built (see ``validate_spec``).
    """
    validate_spec(spec)
    device = torch.device(device or "cpu")
    with _GLOBAL_RNG:
        # Seeding the global RNG here makes a spec build the same model every time.
        torch.manual_seed(spec.seed)
        return _build(spec, schema, device)


def _build(spec: ModelSpec, schema: FeatureSchema, device: torch.device) -> DLRM:
    tables = [
        EmbeddingBagConfig(
            name=f"t_{name}",
            embedding_dim=spec.embedding_dim,
            num_embeddings=rows,
            feature_names=[name],
        )
        for name, rows in zip(schema.sparse_features, schema.table_rows, strict=True)
    ]
    sparse = FusedEmbeddingBagCollection(
        tables, learning_rate=spec.sparse_lr, eps=SPARSE_EPS, device=device, seed=spec.seed
    )
    model = DLRM(
        embedding_bag_collection=sparse,
        dense_in_features=schema.num_dense,
        dense_arch_layer_sizes=[*spec.dense_hidden, spec.embedding_dim],
        over_arch_layer_sizes=[*spec.over_hidden, 1],
        dense_device=device,
    )
    if spec.dropout > 0.0:
        num_sparse = len(schema.sparse_features)
        # DLRM's interaction output: the dense embedding (D), one dot product per pair
        # of sparse features, and one per sparse feature with the dense embedding.
        interaction_width = spec.embedding_dim + num_sparse * (num_sparse - 1) // 2 + num_sparse
        model.over_arch = DropoutOverArch(
            in_features=interaction_width,
            layer_sizes=[*spec.over_hidden, 1],
            dropout=spec.dropout,
            device=device,
        )
    return model


def dense_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters a dense optimizer should step: all but the fused embedding tables.

    The fused tables are registered as parameters (so ``state_dict`` saves them) but
    are updated inside backward; stepping them again would corrupt them.

    Args:
        model: A model from ``build_model``.

    Returns:
        The dense parameters, in registration order.
    """
    fused = {
        id(p)
        for m in model.modules()
        if isinstance(m, FusedEmbeddingBagCollection)
        for p in m.parameters()
    }
    return [p for p in model.parameters() if id(p) not in fused]
