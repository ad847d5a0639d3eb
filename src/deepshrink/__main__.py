"""`python -m deepshrink ...` (and `torchrun -m deepshrink ...`) runs the command line."""

from .cli import main

main()
