"""Deterministic decisions. These modules import pydantic, temporalio and contracts only."""
