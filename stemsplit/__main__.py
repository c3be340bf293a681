"""`python -m stemsplit`: the command line."""

from .cli import main

main()
