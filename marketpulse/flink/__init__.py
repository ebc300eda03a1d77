"""PyFlink building blocks of the DataStream job (jobs/market_metrics.py): row types, the Flink functions
around marketpulse.analytics, and the pure window/late logic they share with the unit tests.

The functions live in this installed package, not in jobs/, so that the Python workers of the cluster (and of
a local mini-cluster in tests) import them by name instead of unpickling copies of a script's code."""
