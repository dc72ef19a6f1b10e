"""Sparse kernels: the only package that imports ``fbgemm_gpu``.

Each kernel sits beside a plain-torch reference with the same semantics, so tests
compare the fast path with something a reader can check by eye.
"""

from kernels.reference import ReferenceEmbeddingBagCollection, rowwise_adagrad_update
from kernels.tbe import FusedEmbeddingBagCollection

__all__ = [
    "FusedEmbeddingBagCollection",
    "ReferenceEmbeddingBagCollection",
    "rowwise_adagrad_update",
]
