"""The house stays livable: no module, class or function past the sizes STYLE.md sets.

    python -m tests.test_sizes [N]   prints the N largest modules, classes and functions

Tests and migrations are not measured (a test module may be long; a migration is history).
"""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = (".venv", "tests", ".rea", ".git", "build")

MAX_MODULE = 500
MAX_WORKFLOW_MODULE = 400
MAX_CLASS = 400
MAX_FUNCTION = 80


def measure() -> tuple[list[tuple[int, str]], list[tuple[int, str]], list[tuple[int, str]]]:
    """Lines of every module, class and function, as (lines, name) pairs."""
    modules, classes, functions = [], [], []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIP or "migrations" in rel.parts:
            continue
        text = path.read_text()
        modules.append((len(text.splitlines()), str(rel)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                row = (lines, f"{rel}:{node.name}")
                (classes if isinstance(node, ast.ClassDef) else functions).append(row)
    return modules, classes, functions


def test_no_module_class_or_function_is_too_long() -> None:
    modules, classes, functions = measure()
    too_long = [
        f"{name}: {n} lines (at most {limit})"
        for rows, limit_of in (
            (
                modules,
                lambda name: MAX_WORKFLOW_MODULE if name.startswith("workflows/") else MAX_MODULE,
            ),
            (classes, lambda name: MAX_CLASS),
            (functions, lambda name: MAX_FUNCTION),
        )
        for n, name in rows
        if n > (limit := limit_of(name))
    ]
    assert not too_long, "split these along a cut a reader can name:\n" + "\n".join(too_long)


def test_the_measure_sees_the_code() -> None:
    modules, classes, functions = measure()
    names = {name for _, name in modules}
    assert "workflows/campaign.py" in names and "cli/campaign.py" in names
    assert any(name.endswith(":CampaignWorkflow") for _, name in classes)
    assert any(name.endswith(":train") for _, name in functions)


if __name__ == "__main__":
    top = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    for title, rows in zip(("modules", "classes", "functions"), measure(), strict=True):
        print(f"== {title}")
        for n, name in sorted(rows, reverse=True)[:top]:
            print(f"{n:6d}  {name}")
