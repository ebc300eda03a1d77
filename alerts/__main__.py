"""python -m alerts: delivers the anomalies topic's anomalies as alerts (see alerts/__init__.py)."""

import sys

from alerts.cli import main

if __name__ == "__main__":
    sys.exit(main())
