"""``python -m slurmdev up|down [DIR]``: start or stop the single-node Slurm cluster."""

from slurmdev import main

main()
