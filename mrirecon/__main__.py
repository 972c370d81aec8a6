"""``python -m mrirecon``: the command line (also ``torchrun -m mrirecon ...``)."""

import sys

from mrirecon.cli import main

if __name__ == "__main__":
    sys.exit(main())
