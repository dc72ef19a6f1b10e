"""`rea train` and `rea compare` show their ETA from the share of steps done."""

from cli.local import eta


def test_eta_from_the_share_done():
    assert eta(0.0, 5.0) == ""
    assert eta(0.5, 10.0) == "ETA 10s"
    assert eta(0.25, 30.0) == "ETA 1m30s"
