"""``python -m harness.final_compare``: the ``cloudmask compare`` subcommand (see :mod:`harness.compare.driver`)."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
