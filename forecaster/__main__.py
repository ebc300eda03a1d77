"""python -m forecaster: forecasts of the next bar closes and their errors (see forecaster/__init__.py)."""

import sys

from forecaster.cli import main

if __name__ == "__main__":
    sys.exit(main())
