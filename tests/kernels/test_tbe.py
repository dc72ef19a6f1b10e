"""The fused FBGEMM embedding bags against the plain-torch reference."""

import pytest
import torch
from torchrec.models.dlrm import DLRM
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from kernels import FusedEmbeddingBagCollection, ReferenceEmbeddingBagCollection

LR = 0.1
EPS = 1e-8


def _tables(dim: int = 4) -> list[EmbeddingBagConfig]:
    return [
        EmbeddingBagConfig(
            name="t_user", embedding_dim=dim, num_embeddings=10, feature_names=["user"]
        ),
        EmbeddingBagConfig(
            name="t_genre", embedding_dim=dim, num_embeddings=7, feature_names=["genre"]
        ),
        EmbeddingBagConfig(
            name="t_hour", embedding_dim=dim, num_embeddings=5, feature_names=["hour"]
        ),
    ]


def _features() -> KeyedJaggedTensor:
    # B = 3 examples, F = 3 features: multi-hot bags, a repeated id (row 2 of genre
    # twice in one bag) and empty bags.
    #            ex0      ex1     ex2
    # user      [1]      [1, 4]  []
    # genre     [2, 2]   []      [0, 6, 3]
    # hour      [4]      [0]     [4]
    return KeyedJaggedTensor.from_lengths_sync(
        keys=["user", "genre", "hour"],
        values=torch.tensor([1, 1, 4, 2, 2, 0, 6, 3, 4, 0, 4]),
        lengths=torch.tensor([1, 2, 0, 2, 0, 3, 1, 1, 1]),
    )


OPTIMIZERS = ["rowwise_adagrad", "sgd", "adam"]
# fp16 rows: both sides round to nearest after each step, but an fp32 difference in the
# last bit can round to neighbouring fp16 values (one ulp is ~2.4e-4 near 0.3).
TOLERANCE = {"fp32": {"rtol": 1e-5, "atol": 1e-6}, "fp16": {"rtol": 2e-3, "atol": 1e-3}}


def _pair(lr: float = LR, ref_lr: float = LR, optimizer: str = "rowwise_adagrad", precision="fp32"):
    tables = _tables()
    fused = FusedEmbeddingBagCollection(
        tables, learning_rate=lr, eps=EPS, seed=3, optimizer=optimizer, precision=precision
    )
    ref = ReferenceEmbeddingBagCollection(
        tables, learning_rate=ref_lr, eps=EPS, seed=3, optimizer=optimizer, precision=precision
    )
    return fused, ref


def _assert_tables_close(fused, ref, precision: str = "fp32") -> None:
    for a, b in zip(fused.split_weights(), ref.split_weights(), strict=True):
        torch.testing.assert_close(a.float(), b, **TOLERANCE[precision])
    states = fused.optimizer_states(), ref.optimizer_states()
    assert len(states[0]) == len(states[1])
    for a, b in zip(*states, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_same_seed_gives_same_initial_tables():
    fused, ref = _pair()
    _assert_tables_close(fused, ref)
    other = FusedEmbeddingBagCollection(_tables(), learning_rate=LR, seed=4)
    assert not torch.equal(other.split_weights()[0], fused.split_weights()[0])


def test_forward_matches_reference():
    fused, ref = _pair()
    out, expected = fused(_features()), ref(_features())
    assert out.keys() == ["user", "genre", "hour"]
    assert out.values().shape == (3, 3 * 4)  # (B, F * D)
    torch.testing.assert_close(out.values(), expected.values())


def test_forward_by_hand_for_multi_hot_and_empty_bags():
    fused, _ = _pair()
    w_user, w_genre, _ = fused.split_weights()
    pooled = fused(_features()).to_dict()
    torch.testing.assert_close(pooled["user"][1], w_user[1] + w_user[4])
    torch.testing.assert_close(pooled["user"][2], torch.zeros(4))  # empty bag sums to 0
    torch.testing.assert_close(pooled["genre"][0], 2 * w_genre[2])


def test_forward_accepts_keys_in_any_order():
    fused, _ = _pair()
    kjt = _features()
    shuffled = kjt.permute([2, 0, 1])
    torch.testing.assert_close(fused(shuffled).values(), fused(kjt).values())


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("steps", [1, 3])
def test_fused_training_steps_match_reference(steps, optimizer, precision):
    fused, ref = _pair(optimizer=optimizer, precision=precision)
    before = fused.split_weights()
    target = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))  # (B, F * D)
    for _ in range(steps):
        # A non-trivial loss so gradients differ per row and per column.
        loss_f = ((fused(_features()).values() - target) ** 2).sum()
        loss_r = ((ref(_features()).values() - target) ** 2).sum()
        loss_f.backward()  # the fused kernel updates its tables here
        loss_r.backward()
        ref.step()
    # The update really happened, on looked-up rows only.
    after = fused.split_weights()
    assert not torch.allclose(after[0][1], before[0][1])
    torch.testing.assert_close(after[0][0], before[0][0])  # user row 0 never looked up
    assert after[0].dtype == (torch.float16 if precision == "fp16" else torch.float32)
    _assert_tables_close(fused, ref, precision)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_comparison_detects_a_wrong_learning_rate(optimizer):
    # Negative control: the equality above is not vacuous.
    fused, ref = _pair(lr=LR, ref_lr=LR * 1.5, optimizer=optimizer)
    fused(_features()).values().sum().backward()
    ref(_features()).values().sum().backward()
    ref.step()
    with pytest.raises(AssertionError):
        _assert_tables_close(fused, ref)


def test_fp16_rows_halve_storage_and_stay_close_to_fp32():
    fp32, _ = _pair()
    fp16, _ = _pair(precision="fp16")
    assert fp16.split_weights()[0].element_size() == 2
    torch.testing.assert_close(
        fp16(_features()).values(), fp32(_features()).values(), rtol=1e-3, atol=1e-3
    )


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_set_learning_rate_changes_the_step(optimizer):
    fused, ref = _pair(optimizer=optimizer)
    fused.set_learning_rate(LR / 4)
    ref.learning_rate = LR / 4
    for _ in range(2):
        fused(_features()).values().pow(2).sum().backward()
        ref(_features()).values().pow(2).sum().backward()
        ref.step()
    _assert_tables_close(fused, ref)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_checkpoint_state_round_trip_resumes_identically(optimizer):
    a, _ = _pair(optimizer=optimizer)
    a(_features()).values().pow(2).sum().backward()
    saved = a.checkpoint_state()
    b, _ = _pair(optimizer=optimizer)
    b.load_checkpoint_state(saved)
    for m in (a, b):
        m(_features()).values().pow(2).sum().backward()
    for x, y in zip(a.split_weights() + a.optimizer_states(),
                    b.split_weights() + b.optimizer_states(), strict=True):  # fmt: skip
        assert torch.equal(x, y)


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ValueError, match="optimizer"):
        FusedEmbeddingBagCollection(_tables(), learning_rate=LR, optimizer="lamb")  # type: ignore[arg-type]


def test_load_weights_round_trip_and_shape_check():
    fused, _ = _pair()
    new = [torch.full_like(w, 0.5) for w in fused.split_weights()]
    fused.load_weights(new)
    assert all(torch.equal(a, b) for a, b in zip(fused.split_weights(), new, strict=True))
    with pytest.raises(ValueError, match="t_user"):
        fused.load_weights([torch.zeros(3, 4), *new[1:]])


def test_embedding_dim_not_multiple_of_4_is_rejected():
    with pytest.raises(ValueError, match="multiple of 4"):
        FusedEmbeddingBagCollection(_tables(dim=6), learning_rate=LR)


def test_plugs_into_torchrec_dlrm():
    fused, _ = _pair()
    model = DLRM(
        embedding_bag_collection=fused,
        dense_in_features=2,
        dense_arch_layer_sizes=[8, 4],
        over_arch_layer_sizes=[8, 1],
    )
    logits = model(dense_features=torch.randn(3, 2), sparse_features=_features())
    assert logits.shape == (3, 1)  # (B, 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_cuda_fused_steps_match_cpu_reference(optimizer, precision):
    tables = _tables()
    kw = {"learning_rate": LR, "eps": EPS, "seed": 3, "optimizer": optimizer}
    fused = FusedEmbeddingBagCollection(tables, device="cuda", precision=precision, **kw)
    ref = ReferenceEmbeddingBagCollection(tables, precision=precision, **kw)
    target = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))  # (B, F * D)
    for _ in range(3):
        out = fused(_features().to(torch.device("cuda"))).values()
        ((out - target.cuda()) ** 2).sum().backward()
        ((ref(_features()).values() - target) ** 2).sum().backward()
        ref.step()
    for a, b in zip(fused.split_weights(), ref.split_weights(), strict=True):
        torch.testing.assert_close(a.cpu().float(), b, **TOLERANCE[precision])
