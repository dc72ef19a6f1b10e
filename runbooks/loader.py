"""Load runbook entries from YAML files and validate them, failing with the file and field."""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from contracts import RunbookEntry

BUILTIN_DIR = Path(__file__).resolve().parent / "patterns"


class RunbookError(ValueError):
    """A runbook file cannot be read or does not validate; the message names file and field."""


@dataclass(frozen=True)
class Runbook:
    """Validated entries, most specific first (see ``specificity``).

    Attributes:
        entries: The entries, in matching order.
        sources: Where each entry id was read from.
    """

    entries: tuple[RunbookEntry, ...]
    sources: dict[str, Path]

    def get(self, entry_id: str) -> RunbookEntry | None:
        return next((e for e in self.entries if e.id == entry_id), None)


def specificity(entry: RunbookEntry) -> int:
    """How many conditions the entry's matcher sets: the more, the narrower it is, so it is
    tried before broader ones (``device-oom`` before ``host-oom``)."""
    m = entry.match
    return sum(bool(c) for c in (m.error_types, m.states, m.message, m.signature))


def load_entry(path: Path) -> RunbookEntry:
    """One entry from one YAML file.

    Raises:
        RunbookError: unreadable YAML, or a field that does not validate (named with its
            path in the file, e.g. ``remedies.0.kind``).
    """
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise RunbookError(f"{path}: cannot read it as YAML: {err}") from None
    if not isinstance(data, dict):
        raise RunbookError(f"{path}: expected a mapping with id, title, match, remedies")
    try:
        return RunbookEntry.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
        )
        raise RunbookError(f"{path}: {problems}") from None


def load_runbook(*extra_dirs: Path, builtin: bool = True) -> Runbook:
    """The shipped entries plus those of ``extra_dirs`` (missing folders are skipped).

    An entry in a later folder with the id of an earlier one replaces it only with a higher
    ``version``; the same id and version twice is an error, so an edit is never silently lost.

    Raises:
        RunbookError: a file does not validate, or two files claim one id and version.
    """
    dirs: Iterable[Path] = [*([BUILTIN_DIR] if builtin else []), *extra_dirs]
    entries: dict[str, RunbookEntry] = {}
    sources: dict[str, Path] = {}
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")):
            entry = load_entry(path)
            known = entries.get(entry.id)
            if known is not None and entry.version <= known.version:
                raise RunbookError(
                    f"{path}: id {entry.id!r} version {entry.version} is already defined by "
                    f"{sources[entry.id]} (version {known.version}); raise version to replace it"
                )
            entries[entry.id] = entry
            sources[entry.id] = path
    ordered = sorted(entries.values(), key=lambda e: -specificity(e))
    return Runbook(entries=tuple(ordered), sources=sources)
