"""The dashboard's views, one module each: `NAME`, `LABEL`, `layout(deps)` (its part of the page) and
`register(app, deps)` (its callbacks), with its renderers as module-level pure functions.

A view renders from the refresh context (dashboard.context.ViewContext, in the `context` store) and only
while its tab is open; dashboard.shell owns the controls, the context and the URL."""

from __future__ import annotations

from dataclasses import dataclass

from dashboard.db import Database
from dashboard.health import FlinkClient, HealthMonitor
from marketpulse.config import Settings


@dataclass(frozen=True)
class Deps:
    settings: Settings
    db: Database
    flink: FlinkClient
    monitor: HealthMonitor


def all_views():
    """The view modules in tab order (imported here, not at module level, so each module can import Deps)."""
    from dashboard.views import anomalies, health, overview, quality, symbol

    return (overview, symbol, anomalies, quality, health)
