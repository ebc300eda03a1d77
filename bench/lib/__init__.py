"""Code the benchmarks share. Not a benchmark itself: `make bench` runs bench/*.py, not this folder."""
