"""The error table cannot drift: every error type the workflow code raises is in
``refusals.ERRORS``, every entry there is raised somewhere, and docs/api.md's table lists
exactly those types with the same meanings."""

import ast
import re
from pathlib import Path

from workflows.refusals import ERRORS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"


def raised_types() -> dict[str, str]:
    """Error type -> where: the string literal given as ``type=`` to ApplicationError, or as
    the second argument of ``refuse``, anywhere in workflows/."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "workflows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            args = [k.value for k in node.keywords if k.arg == "type"]
            if name == "refuse" and len(node.args) > 1:
                args.append(node.args[1])
            if name in ("refuse", "ApplicationError"):
                for arg in args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        found[arg.value] = f"{path.name}:{node.lineno}"
                    elif isinstance(arg, ast.IfExp):  # "A" if x else "B"
                        for branch in (arg.body, arg.orelse):
                            assert isinstance(branch, ast.Constant)
                            found[branch.value] = f"{path.name}:{node.lineno}"
    return found


def doc_table() -> dict[str, str]:
    """The rows of api.md's "Every error type" table: type -> meaning."""
    section = DOC.read_text().split("### Every error type", 1)[1]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| (.+) \|$", section, re.MULTILINE)
    return dict(rows)


def test_every_raised_error_type_is_in_the_table_and_every_entry_is_raised() -> None:
    raised = raised_types()
    assert set(raised) - set(ERRORS) == set(), raised
    assert set(ERRORS) - set(raised) == set()


def test_the_api_doc_lists_exactly_the_error_types_with_their_meanings() -> None:
    documented = doc_table()
    assert list(documented) == list(ERRORS)
    for kind, meaning in ERRORS.items():
        assert documented[kind] == meaning, kind
