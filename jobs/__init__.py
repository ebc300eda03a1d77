"""The PyFlink jobs, one module per job (run with `flink run -py jobs/<job>.py`)."""
