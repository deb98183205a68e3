"""``python -m actionq`` is the ``actionq`` command."""

from actionq.cli.main import main

main()
