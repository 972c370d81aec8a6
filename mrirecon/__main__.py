"""``python -m mrirecon``: the command line (also ``torchrun -m mrirecon ...``)."""

import sys

from mrirecon.cli import main

sys.exit(main())
