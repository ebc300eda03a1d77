"""MarketPulse trade generator: a reproducible, shardable synthetic market (or a CSV replay) for Kafka.

Run it as `python -m generator --help`; generator/README.md documents the record formats.
The stream of records is produced by pure code (stream.py, replay.py); sink.py only writes it out.
"""
