"""``python -m harness.replay``: the ``cloudmask replay`` subcommand (see :mod:`harness.audit.command`)."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main(["replay", *sys.argv[1:]]))
