"""The stack's components in start order (stop order is the reverse), and the interface each one follows.

A component is a module (stack/postgres.py, kafka.py, flink.py, sqlgateway.py, prometheus.py) that provides
everything in `Component` with exactly these signatures; `up`, `down`, `status` and the supervisor use nothing
else of it generically.
tests/unit/test_stack_components.py checks every registered component against the protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from marketpulse.config import Settings
from stack import flink, kafka, postgres, prometheus, sqlgateway
from stack.proc import Program


@runtime_checkable
class Component(Protocol):
    NAME: str  # as `up`/`down`/`status` name it: "postgres", "kafka", "flink"
    PROGRAMS: tuple[str, ...]  # the supervisor's programs (processes) of this component, in start order
    READY_TIMEOUT_S: float  # how long `up` waits for ready() before it gives up

    def programs(self, settings: Settings) -> list[Program]:
        """The processes the supervisor runs in the foreground, one per name in PROGRAMS, in that order."""
        ...

    def ports(self, settings: Settings) -> list[tuple[int, str]]:
        """(port, what) the component binds: checked free before a start."""
        ...

    def prepare(self, settings: Settings) -> None:
        """Before the supervisor's first start: configuration and state folders (formatted once)."""
        ...

    def ready(self, settings: Settings) -> bool:
        """Serves requests (not merely: the process is alive)."""
        ...

    def healthy(self, settings: Settings) -> bool:
        """A cheap check for `status`: our process runs and answers."""
        ...

    def program_pids(self) -> dict[str, list[int]]:
        """Live pids per name in PROGRAMS, from the component's own pid files (whoever started them)."""
        ...

    def pids(self) -> list[int]:
        """All live pids of the component."""
        ...

    def running(self) -> bool:
        """Any of its processes is alive (whether or not it answers yet)."""
        ...

    def stop(self, settings: Settings) -> bool:
        """Stops what runs unsupervised; True when something was running."""
        ...

    def log_hint(self) -> Path:
        """The log (file or folder) a failure message points to."""
        ...


COMPONENTS: tuple[Component, ...] = (postgres, kafka, flink, sqlgateway, prometheus)  # type: ignore[assignment]  # modules
