"""MarketPulse: shared code for the generator, the Flink jobs, the dashboard and the local stack."""
