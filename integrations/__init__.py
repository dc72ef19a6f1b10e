"""Front ends other than the CLI that turn people's actions into Temporal updates."""
