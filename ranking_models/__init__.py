"""Ranking models: datasets, TorchRec DLRM, metrics and the trainer. No Temporal here."""
