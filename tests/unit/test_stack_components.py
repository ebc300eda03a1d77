"""Every registered stack component follows the Component protocol: same members, same signatures; and the
supervisor's programs are exactly the components' programs, in start order."""

import inspect
import types

import pytest

from stack import supervisor
from stack.components import COMPONENTS, Component


def protocol_members() -> dict[str, object]:
    """The protocol's members: methods (as functions) and annotated attributes (as their annotation)."""
    members = {name: value for name, value in vars(Component).items()
               if inspect.isfunction(value) and not name.startswith("_")}
    members.update({name: annotation for name, annotation in Component.__annotations__.items()})
    return members


def parameters(function) -> list[tuple[str, object, object, object]]:
    """(name, kind, default, annotation) of each parameter, without `self`; annotations as written."""
    params = list(inspect.signature(function).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return [(p.name, p.kind, p.default, p.annotation) for p in params]


def test_the_protocol_declares_the_interface_up_down_and_status_use():
    assert set(protocol_members()) == {
        "NAME", "PROGRAMS", "READY_TIMEOUT_S", "programs", "ports", "prepare", "ready",
        "healthy", "program_pids", "pids", "running", "stop", "log_hint"}


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.__name__)
def test_component_satisfies_the_protocol(component):
    assert isinstance(component, types.ModuleType)
    assert isinstance(component, Component)  # runtime_checkable: every member is present
    for name, declared in protocol_members().items():
        actual = getattr(component, name)
        if inspect.isfunction(declared):
            assert inspect.isfunction(actual), f"{component.__name__}.{name} is not a function"
            assert parameters(actual) == parameters(declared), \
                f"{component.__name__}.{name}{inspect.signature(actual)}"
            assert inspect.signature(actual).return_annotation == \
                inspect.signature(declared).return_annotation, f"{component.__name__}.{name} return type"
    assert isinstance(component.NAME, str) and component.__name__ == f"stack.{component.NAME}"
    assert isinstance(component.PROGRAMS, tuple) and component.PROGRAMS
    assert all(isinstance(program, str) for program in component.PROGRAMS)
    assert isinstance(component.READY_TIMEOUT_S, float) and component.READY_TIMEOUT_S > 0


def test_a_module_missing_a_member_is_not_a_component():
    fake = types.ModuleType("stack.fake")
    for name in protocol_members():
        setattr(fake, name, lambda *args: None)
    assert isinstance(fake, Component)
    del fake.pids
    assert not isinstance(fake, Component)


def test_components_are_distinct_and_own_the_supervisors_programs_in_start_order():
    assert [c.NAME for c in COMPONENTS] == ["postgres", "kafka", "flink", "sqlgateway", "prometheus"]
    assert supervisor.PROGRAMS == ("postgres", "kafka", "jobmanager", "taskmanager", "sqlgateway",
                                   "prometheus")
    assert supervisor.COMPONENT == {"postgres": "postgres", "kafka": "kafka", "jobmanager": "flink",
                                    "taskmanager": "flink", "sqlgateway": "sqlgateway",
                                    "prometheus": "prometheus"}


def test_programs_match_program_names(monkeypatch):
    # programs() builds argv from the configuration and the installed binaries; only names are compared.
    from marketpulse.config import load_settings
    from stack import flink, kafka, postgres, prometheus, sqlgateway

    settings = load_settings()
    monkeypatch.setattr(postgres, "base_dir", lambda: postgres.paths.STACK_DIR / "postgres-test")
    monkeypatch.setattr(postgres, "_bin", lambda name: f"/usr/lib/postgresql/bin/{name}")
    monkeypatch.setattr(kafka, "require_java", lambda: "java")
    monkeypatch.setattr(prometheus, "binary", lambda: "/usr/bin/prometheus")
    for component in (postgres, kafka, flink, sqlgateway, prometheus):
        assert [p.name for p in component.programs(settings)] == list(component.PROGRAMS)
    assert [p.name for p in supervisor.programs(settings)] == list(supervisor.PROGRAMS) \
        == supervisor.program_names(settings)
    two = load_settings(environ={"MARKETPULSE_FLINK_TASKMANAGERS": "2"})
    assert [p.name for p in supervisor.programs(two)] == supervisor.program_names(two)


def test_a_start_up_failure_shows_the_logs_error_lines_or_else_its_last_lines(tmp_path):
    from stack.proc import log_excerpt

    log = tmp_path / "server.log"
    log.write_text("started\n" + "INFO ok\n" * 500
                   + "[2026-12-05] ERROR [KafkaServer] Fatal error: Address already in use\nshutting down\n")
    assert log_excerpt(log) == ["[2026-12-05] ERROR [KafkaServer] Fatal error: Address already in use"]
    log.write_text("one\ntwo\nthree\n")
    assert log_excerpt(log, lines=2) == ["two", "three"]
    assert log_excerpt(tmp_path / "missing.log") == [] and log_excerpt(None) == []


def test_several_taskmanagers_are_numbered_programs_of_their_own(monkeypatch):
    """[flink] taskmanagers = 3: three TaskManager processes, each its own identity (pid and log files), the
    supervisor's names in start order, and `only` by kind reaches every one."""
    from marketpulse.config import load_settings
    from stack import flink

    settings = load_settings(environ={"MARKETPULSE_FLINK_TASKMANAGERS": "3"})
    programs = flink.programs(settings)
    assert [p.name for p in programs] == ["jobmanager", "taskmanager", "taskmanager-2", "taskmanager-3"]
    assert [p.title for p in programs] == ["Flink JobManager", "Flink TaskManager", "Flink TaskManager 2",
                                           "Flink TaskManager 3"]
    idents = [p.env.get("FLINK_IDENT_STRING") for p in programs]
    assert idents[:2] == [None, None] and idents[2].endswith("-taskmanager-2") \
        and idents[3].endswith("-taskmanager-3")
    assert len({p.log_file for p in programs}) == 4
    names = supervisor.program_names(settings)
    assert names[names.index("jobmanager"):names.index("sqlgateway")] == \
        ["jobmanager", "taskmanager", "taskmanager-2", "taskmanager-3"]
    assert [p.name for p in supervisor.programs(settings, only=["taskmanager"])] == \
        ["taskmanager", "taskmanager-2", "taskmanager-3"]
    assert supervisor.kind("taskmanager-3") == "taskmanager" and supervisor.component_of("taskmanager-3") \
        == "flink"


def test_the_default_is_one_taskmanager():
    from marketpulse.config import load_settings
    from stack import flink

    settings = load_settings(environ={})
    assert flink.taskmanager_names(settings) == ["taskmanager"]
    assert flink.slots_per_taskmanager(settings) == settings.flink.taskmanager_slots
