"""A campaign's report: its figures as PNGs (``charts``) and one self-contained HTML page
embedding them (``page``).

A package rather than two top-level modules so that ``report.page`` is found by installs made
before it existed (an editable install maps ``report`` to this folder).
"""

from report.charts import (
    PHASE_COLOURS,
    plot_budget,
    plot_campaign,
    plot_evidence,
    plot_progress,
    plot_timeline,
)
from report.page import SECTIONS, render_html, write_report

__all__ = [
    "PHASE_COLOURS",
    "SECTIONS",
    "plot_budget",
    "plot_campaign",
    "plot_evidence",
    "plot_progress",
    "plot_timeline",
    "render_html",
    "write_report",
]
