"""The GPU check's CPU side: the plain model, the numerics comparison, the speed table, the
one-line skip without CUDA; on a CUDA host (``gpu`` marker) the check itself."""

import pytest
import torch

from bench import gpu_check


def test_without_cuda_it_says_so_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "skipped, CUDA is not available" in out


def test_the_plain_model_trains_and_matches_itself_across_devices_of_one_kind():
    torch.manual_seed(0)
    model = gpu_check.PlainDlrm(rows=50)
    dense, ids, labels = gpu_check.batch(64)
    data = (dense, ids % 50, labels)
    first = gpu_check.one_step(model, data)
    for _ in range(20):
        last = gpu_check.one_step(model, data)
    assert last < first  # it learns
    assert gpu_check.numerics("cpu", rows=50) == {"logits": 0.0, "loss": 0.0, "weights": 0.0}


def test_every_part_runs_on_the_cpu(capsys):
    assert gpu_check.main(["--device", "cpu", "--batches", "512", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "numerics vs CPU" in out and "-> ok" in out
    assert "    512" in out and "openrea's model" in out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_gpu_check_passes_on_cuda(capsys):
    assert gpu_check.main(["--batches", "512", "4096"]) == 0
    assert "-> ok" in capsys.readouterr().out
