"""Run the throughput suite: the same as ``actorsource bench`` (see ``--help``)."""

import sys

from actorsource.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
