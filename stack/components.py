"""The stack's components in start order (stop order is the reverse)."""

from stack import flink, kafka, postgres

COMPONENTS = (postgres, kafka, flink)
