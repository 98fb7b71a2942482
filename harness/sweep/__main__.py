"""``python -m harness.sweep``: the ``cloudmask sweep`` subcommand (see :mod:`harness.sweep.driver`)."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
