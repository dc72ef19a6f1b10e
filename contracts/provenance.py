"""Where a hypothesis came from: recorded with it, shown in the plan."""

from typing import Literal

from contracts.base import Record

# Where a hypothesis came from. "knowledge": the technique catalog (the offline research
# agent); "llm": a language model; "insights": a change that won on similar past tasks;
# "fixed-mutation": the planner of the first versions; "search-space": a probe of one knob or
# a point drawn from the whole action space (what a random search would try).
Source = Literal["knowledge", "llm", "insights", "fixed-mutation", "search-space"]


class Provenance(Record):
    """Where a hypothesis came from, recorded with it.

    Attributes:
        source: See ``Source``.
        agent: The agent and its version, e.g. ``knowledge-catalog/1``.
        model: The language model that proposed it (``llm`` only).
        prompt_version: The prompt template's version (``llm`` only).
        reply_digest: SHA-256 of the raw reply it was parsed from (``llm`` only).
        technique: The catalog technique it instantiates (``knowledge`` only).
        citation: Where the idea is published.
        evidence: What past experiments said about it, in words.
    """

    source: Source
    agent: str = ""
    model: str = ""
    prompt_version: str = ""
    reply_digest: str = ""
    technique: str = ""
    citation: str = ""
    evidence: str = ""
