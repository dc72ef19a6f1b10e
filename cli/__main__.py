"""`python -m cli`, as `rea`."""

from cli import main

main()
