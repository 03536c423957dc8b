"""`python -m kassa` runs the command line."""

from kassa.cli import main

main()
