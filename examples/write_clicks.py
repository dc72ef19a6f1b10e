"""Write a small click log as Parquet, shaped like a ranking team's table, to try openrea on.

    .venv/bin/python examples/write_clicks.py .rea/clicks.parquet [--rows 40000] [--days 8]

Columns: ``day`` (1..days, the split column), ``click`` (0/1 label), ``price`` and
``position`` (dense; some prices missing), ``user_id`` (text id), ``ad_id`` (integer id),
``category`` (dictionary-encoded text), ``recent_ads`` (a list of integer ids, 0-5 per
row). Clicks follow a planted model (an ad bias, a user x category affinity, a position
effect, and overlap between the ad and the user's recent ads), so a model has signal to
learn. Rows are sorted by day and written in row groups of ``--row-group`` rows.
"""

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def clicks_table(rows: int = 40_000, days: int = 8, seed: int = 0) -> pa.Table:
    """The click log as a pyarrow table (see the module docstring)."""
    rng = np.random.default_rng(seed)
    users, ads, categories = 2_000, 500, 20
    day = np.sort(rng.integers(1, days + 1, rows))
    user = rng.zipf(1.3, rows) % users
    ad = rng.zipf(1.2, rows) % ads
    category = ad % categories
    position = rng.integers(1, 6, rows)
    price = np.round(rng.lognormal(3.0, 1.0, rows), 2)
    history = rng.integers(0, 6, rows)
    offsets = np.concatenate([[0], np.cumsum(history)])
    recent = (ad.repeat(history) + rng.integers(-3, 4, offsets[-1])) % ads
    ad_bias = rng.normal(0.0, 0.8, ads)
    affinity = rng.normal(0.0, 1.0, (users, categories))
    overlap = np.add.reduceat(recent == ad.repeat(history), offsets[:-1]) * (history > 0)
    logit = (
        -1.4
        + ad_bias[ad]
        + affinity[user, category]
        - 0.3 * (position - 1)
        + 0.4 * overlap
        - 0.2 * np.log1p(price)
    )
    click = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    price_column = pa.array(np.where(rng.random(rows) < 0.05, np.nan, price), from_pandas=True)
    return pa.table(
        {
            "day": pa.array(day, pa.int32()),
            "click": pa.array(click),
            "price": price_column,
            "position": pa.array(position, pa.int16()),
            "user_id": pa.array([f"u{u}" for u in user]),
            "ad_id": pa.array(ad, pa.int64()),
            "category": pa.array([f"cat{c}" for c in category]).dictionary_encode(),
            "recent_ads": pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), recent),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="The Parquet file to write.")
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--row-group", type=int, default=8_192)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = clicks_table(args.rows, args.days, args.seed)
    pq.write_table(table, args.out, row_group_size=args.row_group)
    print(f"wrote {table.num_rows:,} rows ({args.days} days) to {args.out}")


if __name__ == "__main__":
    main()
