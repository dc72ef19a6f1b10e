"""The campaign's access scope, enforced where trials read data and write files."""

from pathlib import Path

from temporalio.exceptions import ApplicationError

from contracts import AccessScope, DatasetRef


def readable(scope: AccessScope, dataset: DatasetRef) -> list[Path]:
    """What the campaign may read: ``scope.read``, else the dataset's own path (none for
    generated data or the MovieLens copy shipped in the ``recbole`` wheel)."""
    if scope.read:
        return [Path(p).resolve() for p in scope.read]
    return [Path(dataset.path).resolve()] if dataset.path else []


def writable(scope: AccessScope, data_dir: Path) -> list[Path]:
    """Where the campaign may write: ``scope.write``, else the worker's data dir."""
    return [Path(p).resolve() for p in scope.write] or [data_dir.resolve()]


def inside(path: Path, roots: list[Path]) -> bool:
    path = path.resolve()
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_read(scope: AccessScope | None, dataset: DatasetRef) -> None:
    """Refuse a dataset outside the scope (None: a trial of an older version, no scope).

    Raises:
        ApplicationError: non-retryable ``AccessDenied``, naming the path and the fix.
    """
    if scope is None or not dataset.path:
        return
    roots = readable(scope, dataset)
    if not inside(Path(dataset.path), roots):
        raise ApplicationError(
            f"access: dataset path {dataset.path} is outside the campaign's read scope "
            f"{[str(r) for r in roots]}; add it to CampaignRequest.access.read",
            type="AccessDenied",
            non_retryable=True,
        )


def check_write(scope: AccessScope | None, path: Path, data_dir: Path) -> None:
    """Refuse writing under ``path`` outside the scope.

    Raises:
        ApplicationError: non-retryable ``AccessDenied``, naming the path and the fix.
    """
    if scope is None:
        return
    roots = writable(scope, data_dir)
    if not inside(path, roots):
        raise ApplicationError(
            f"access: {path} is outside the campaign's write scope {[str(r) for r in roots]}; "
            "add its folder to CampaignRequest.access.write or run the worker with "
            "REA_DATA_DIR inside it",
            type="AccessDenied",
            non_retryable=True,
        )
