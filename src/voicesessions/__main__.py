"""``python -m voicesessions`` runs the command line."""

from voicesessions.cli import main

main()
