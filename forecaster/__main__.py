"""python -m forecaster: forecasts of the next bar closes and their errors (see forecaster/__init__.py)."""

import os
import sys

# numpy's OpenBLAS starts a thread per core and spins them on every small matrix product: on a 2-core
# machine busy with Flink, 18 ARIMA fits took 40 s instead of 1.4 s. Set here, before forecaster.cli imports
# numpy, and not in the package: `make demo` imports forecaster.config, and its children (the stack, if it
# starts it) would inherit it. Not a MARKETPULSE_* setting: it is this process's own tuning.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from forecaster.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
