"""Workflow modules stay deterministic and light: no torch, no activity code."""

import subprocess
import sys


def test_workflow_modules_do_not_import_torch() -> None:
    code = (
        "import sys, workflows.campaign, workflows.policy, workflows.options, contracts\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'torchrec', 'fbgemm_gpu', 'activities', 'ranking_models', 'kernels', 'numpy'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_check_above_can_fail() -> None:
    code = "import sys, ranking_models.trainer\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
