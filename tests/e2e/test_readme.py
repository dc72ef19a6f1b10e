"""Every shell snippet of the README runs as pasted, against a real `rea up`."""

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.test_first_hour import REA, rea_env, start_up, stop_up

ROOT = Path(__file__).resolve().parents[2]
# Snippets this test does not paste, and why; every other snippet runs.
NOT_PASTED = {
    "make demo": "`make test` runs this test; the demo's command is tests/cli/test_cli.py's",
    ".venv/bin/rea up": "started by this test in the background, as a user's other shell",
}


def snippets() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_the_snippets_this_test_expects() -> None:
    found = snippets()
    skipped = [s for s in found if any(s.startswith(prefix) for prefix in NOT_PASTED)]
    assert len(skipped) == len(NOT_PASTED), "a snippet this test skips is gone: update NOT_PASTED"
    assert len(found) - len(skipped) >= 4


@pytest.mark.e2e
# Two whole campaigns (the CLI's and the Temporal CLI's) with seeded phases: minutes.
@pytest.mark.timeout(900)
def test_every_readme_snippet_runs_as_pasted(tmp_path: Path) -> None:
    env = rea_env(tmp_path / "data", columns=80)
    # The Temporal CLI reads its own variable; a user's default would be localhost:7233.
    env["TEMPORAL_ADDRESS"] = env["REA_TEMPORAL_ADDRESS"]
    assert REA.exists()
    up = start_up(env)
    try:
        for snippet in snippets():
            if any(snippet.startswith(prefix) for prefix in NOT_PASTED):
                continue
            started = time.monotonic()
            out = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", snippet],
                cwd=ROOT,
                env=env | {"PATH": os.environ["PATH"]},
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert out.returncode == 0, f"{snippet}\n{out.stdout}\n{out.stderr}"
            assert "Traceback" not in out.stderr, out.stderr
            print(f"{time.monotonic() - started:5.1f}s  {snippet.splitlines()[0]}")
    finally:
        stop_up(up, within_s=30)
