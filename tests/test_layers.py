"""The layers' import contracts (pyproject's [tool.importlinter]) hold, and can fail."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # Run from ``root`` so that its packages, not the installed ones, are analysed.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def copy_of_the_packages(tmp_path: Path) -> Path:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    for package in config["root_packages"]:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_layers_hold() -> None:
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_upward_import_breaks_them(tmp_path: Path) -> None:
    root = copy_of_the_packages(tmp_path)
    with (root / "contracts" / "metrics.py").open("a") as f:
        f.write("\nimport activities.search  # noqa: E402, F401\n")
    with (root / "workflows" / "arms.py").open("a") as f:
        f.write("\nimport torch  # noqa: E402, F401\n")
    out = lint_imports(root)
    assert out.returncode != 0
    assert "contracts is not allowed to import activities" in out.stdout
    assert "workflows is not allowed to import torch" in out.stdout
