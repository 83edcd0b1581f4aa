"""``python -m surestep.cli``: the ``surestep`` command without the console script."""

from surestep.cli import main

main()
