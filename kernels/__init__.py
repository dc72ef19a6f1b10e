"""Sparse kernels: the only package that imports ``fbgemm_gpu``.

Each kernel sits beside a plain-torch reference with the same semantics, so tests
compare the fast path with something a reader can check by eye.
"""

from kernels.reference import (
    ReferenceEmbeddingBagCollection,
    adam_update,
    rowwise_adagrad_update,
    sgd_update,
)
from kernels.tbe import EmbeddingPrecision, FusedEmbeddingBagCollection, SparseOptimizer

__all__ = [
    "EmbeddingPrecision",
    "FusedEmbeddingBagCollection",
    "ReferenceEmbeddingBagCollection",
    "SparseOptimizer",
    "adam_update",
    "rowwise_adagrad_update",
    "sgd_update",
]
