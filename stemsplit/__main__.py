"""`python -m stemsplit`: the command line."""

from .cli import main

main(prog_name="stemsplit")
