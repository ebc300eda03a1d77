"""The local MarketPulse stack without Docker: Kafka (KRaft), a Flink session cluster and PostgreSQL,
run as plain processes whose data, logs and pid files all live under .stack/.

    python -m stack up | down | status | logs [component] | setup | sql FILE | submit JOB
"""
