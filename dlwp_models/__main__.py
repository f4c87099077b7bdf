"""``python -m dlwp_models``: the command line (:mod:`dlwp_models.cli.main`)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
