"""Sample data shipped with the generator (sample_trades.csv, rebuilt by make_sample.py)."""
