"""`python -m colabkit …` runs the command line (`colabkit …`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
