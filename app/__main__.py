"""``python -m app`` is the ``actionq`` command."""

from app.cli import main

main()
