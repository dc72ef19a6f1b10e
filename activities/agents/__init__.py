"""Research agents: the sources of hypotheses (the technique catalog, a language model)."""
