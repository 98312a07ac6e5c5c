"""``python -m pandiff.cli`` (as ``torchrun`` and ``accelerate launch -m`` run it): the ``pandiff`` command."""

import sys

from pandiff.cli import main

if __name__ == "__main__":
    sys.exit(main())
