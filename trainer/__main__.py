"""`python -m trainer` (and `torchrun -m trainer`): the same as `entrenar-train`."""

import sys

from trainer.cli import main

if __name__ == "__main__":
    sys.exit(main())
