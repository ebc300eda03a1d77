"""What the Flink jobs compute per trade (window aggregates, anomaly detector), without Flink or Kafka."""

from marketpulse.analytics.detector import (
    PRICE_JUMP,
    PRICE_ZSCORE,
    RULES,
    VOLUME_ZSCORE,
    Anomaly,
    AnomalyDetector,
    DetectorConfig,
)
from marketpulse.analytics.windows import (
    WINDOW_METRICS_COLUMNS,
    WindowAccumulator,
    WindowMetrics,
    aggregate_windows,
    window_start_ms,
)

__all__ = [
    "PRICE_JUMP",
    "PRICE_ZSCORE",
    "RULES",
    "VOLUME_ZSCORE",
    "WINDOW_METRICS_COLUMNS",
    "Anomaly",
    "AnomalyDetector",
    "DetectorConfig",
    "WindowAccumulator",
    "WindowMetrics",
    "aggregate_windows",
    "window_start_ms",
]
