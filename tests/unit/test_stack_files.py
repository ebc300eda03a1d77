"""The files the local stack and docker-compose.yml share agree with conf/pipeline.toml: ports, topics,
schema, Flink configuration and SQL placeholders. (docker compose itself cannot run on these machines.)"""

import re
from pathlib import Path

import pytest
import yaml

from marketpulse.config import load_settings
from stack import flink, kafka, paths
from stack.errors import StackError
from stack.sql import render

REPO = Path(__file__).resolve().parents[2]
SETTINGS = load_settings(environ={})


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def published(service: dict) -> dict[int, int]:
    return {int(p.split(":")[1]): int(p.split(":")[0]) for p in service.get("ports", [])}


def test_compose_publishes_the_local_stack_ports(compose):
    services = compose["services"]
    assert published(services["kafka"]) == {kafka.broker_port(SETTINGS): 9092}
    assert published(services["postgres"]) == {SETTINGS.postgres.port: 5432}
    assert published(services["jobmanager"]) == {flink.rest_host_port(SETTINGS)[1]: 8081}
    assert published(services["dashboard"]) == {SETTINGS.dashboard.port: 8050}


def test_compose_overrides_name_real_settings(compose):
    env = compose["x-marketpulse"]["environment"]
    flat = SETTINGS.flat()
    for name in env:
        assert name.startswith("MARKETPULSE_")
        assert name[len("MARKETPULSE_"):].lower() in flat, f"{name} is not a setting in conf/pipeline.toml"
    # Containers reach Kafka on the internal listener the kafka service advertises.
    kafka_command = compose["services"]["kafka"]["command"][2]
    host_port = env["MARKETPULSE_KAFKA_BOOTSTRAP_SERVERS"]
    assert f"INTERNAL://{host_port}" in kafka_command


def test_compose_uses_the_same_conf_schema_and_credentials(compose):
    services = compose["services"]
    mounts = services["kafka"]["volumes"]
    assert "./conf/kafka/server.properties:/etc/marketpulse/server.properties:ro" in mounts
    assert (REPO / "conf/kafka/server.properties").exists()
    pg_env = services["postgres"]["environment"]
    assert (pg_env["POSTGRES_DB"], pg_env["POSTGRES_USER"]) == (SETTINGS.postgres.database,
                                                                 SETTINGS.postgres.owner_user)
    # Each service gets the password of the one role it logs in as, from the environment (a local default).
    owner = pg_env["POSTGRES_PASSWORD"]
    assert owner == "${MARKETPULSE_POSTGRES_OWNER_PASSWORD:-local-owner-only}"
    roles = {"init": {"owner", "writer", "reader"}, "dashboard": {"reader"},
             **{name: {"writer"} for name in ("jobs", "generator", "live-generator", "alerts", "forecaster")}}
    for name, service in services.items():
        environment = service.get("environment") or {}
        passwords = {key: value for key, value in environment.items() if "PASSWORD" in key}
        if name == "postgres":
            continue
        assert passwords == {f"MARKETPULSE_POSTGRES_{role.upper()}_PASSWORD":
                             f"${{MARKETPULSE_POSTGRES_{role.upper()}_PASSWORD:-local-{role}-only}}"
                             for role in roles.get(name, ())}, name
    # Topics and schema come from the same code as the local stack: `python -m stack init`.
    assert services["init"]["command"] == ["python", "-m", "stack", "init"]
    assert sorted(p.name for p in (REPO / "db/schema").glob("*.sql"))[0] == "001_core.sql"


def test_dockerfile_copies_files_that_exist():
    dockerfile = (REPO / "docker/Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.MULTILINE):
        assert (REPO / source).exists(), f"docker/Dockerfile copies {source}, which does not exist"


def test_dockerfile_copies_every_python_package_of_the_project():
    """A package pyproject.toml installs but the image lacks fails only when its container starts."""
    import tomllib

    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = set(re.findall(r"^COPY (\w+) \1$", (REPO / "docker/Dockerfile").read_text(), re.MULTILINE))
    assert {pattern.rstrip("*") for pattern in include["include"]} <= copied


@pytest.mark.parametrize("service", ["alerts", "forecaster"])
def test_compose_runs_the_python_services_from_the_same_image(compose, service):
    found = compose["services"][service]
    assert found["command"][:3] == ["python", "-m", service]
    assert found["image"] == compose["x-marketpulse"]["image"]
    assert found["depends_on"]["init"] == {"condition": "service_completed_successfully"}


def test_compose_prometheus_targets_are_the_ports_the_services_serve(compose):
    """Each [metrics] target compose gives Prometheus is the host name of the service and the port it serves
    /metrics on; Prometheus is published on the local stack's port."""
    from marketpulse.config import load_settings

    settings = load_settings()
    env, services = compose["x-marketpulse"]["environment"], compose["services"]
    for service in ("generator", "alerts"):
        host, port = env[f"MARKETPULSE_METRICS_{service.upper()}_TARGET"].split(":")
        command = services[service]["command"]
        assert host == service and command[command.index("--metrics-port") + 1] == port
    assert env["MARKETPULSE_METRICS_DASHBOARD_TARGET"] == f"dashboard:{settings.dashboard.port}"
    reporter = env["MARKETPULSE_METRICS_FLINK_REPORTER_PORTS"]
    assert env["MARKETPULSE_METRICS_FLINK_TARGETS"].split(",") == [f"jobmanager:{reporter}",
                                                                   f"taskmanager:{reporter}"]
    port = settings.metrics.prometheus_port
    assert services["prometheus"]["ports"] == [f"{port}:{port}"]
    assert services["prometheus"]["command"] == ["python", "-m", "stack", "flink-daemon", "prometheus"]


def test_prometheus_config_renders_every_target(tmp_path):
    """conf/prometheus/prometheus.yml with the [metrics] settings: valid YAML, one job per source."""
    import yaml

    from marketpulse.config import load_settings
    from stack import prometheus

    settings = load_settings()
    config = yaml.safe_load(prometheus.render_config(settings, tmp_path / "p.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    m = settings.metrics
    assert targets == {"flink": list(m.flink_targets), "generator": [m.generator_target],
                       "alerts": [m.alerts_target], "dashboard": [m.dashboard_target]}
    assert config["global"]["scrape_interval"] == f"{m.scrape_interval_seconds}s"


def test_kafka_properties_render_for_this_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(kafka, "HOME", tmp_path)
    monkeypatch.setattr(kafka, "DATA_DIR", tmp_path / "data")
    rendered = kafka._render_properties(SETTINGS).read_text()
    props = dict(line.split("=", 1) for line in rendered.splitlines() if line and not line.startswith("#"))
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"


def test_flink_conf_has_no_key_twice_and_no_machine_key(tmp_path, monkeypatch):
    monkeypatch.setattr(flink, "CONF_DIR", tmp_path)
    config = yaml.safe_load((flink.render_conf(SETTINGS) / "config.yaml").read_text())
    assert config["taskmanager.numberOfTaskSlots"] == SETTINGS.flink.taskmanager_slots  # one TaskManager
    assert config["rest.port"] == 8081
    # Flink's Python workers run in the project's venv, like the client.
    assert config["python.executable"] == str(paths.PYTHON)
    repo_keys = [line.split(":", 1)[0] for line in (REPO / "conf/flink/config.yaml").read_text().splitlines()
                 if line and not line.startswith((" ", "#"))]
    assert len(repo_keys) == len(set(repo_keys))


def test_sql_render_fills_placeholders_and_refuses_unknown_ones(tmp_path, monkeypatch):
    import stack.sql as sql

    monkeypatch.setattr(sql, "RENDERED_DIR", tmp_path / "out")
    script = tmp_path / "x.sql"
    script.write_text("'${kafka_bootstrap_servers}' '${postgres_jdbc_url}' '${topic}'")
    out = render(script, SETTINGS, {"topic": "t1"}).read_text()
    assert out == "'127.0.0.1:9092' 'jdbc:postgresql://127.0.0.1:5432/marketpulse' 't1'"
    script.write_text("${no_such_setting}")
    with pytest.raises(StackError, match="unknown placeholder"):
        render(script, SETTINGS)


def test_long_running_services_restart_and_one_shots_do_not(compose):
    services = compose["services"]
    for name in ("kafka", "postgres", "jobmanager", "taskmanager", "jobs", "dashboard", "generator",
                 "alerts", "forecaster"):
        assert services[name].get("restart") in ("unless-stopped", "on-failure", "always"), name
    assert "restart" not in services["init"]  # one-shot: it must be allowed to complete


def test_compose_jobs_service_resumes_from_the_clusters_checkpoints(compose):
    """The `jobs` service resubmits lost jobs from the newest checkpoint: it must see the checkpoints where
    the JobManager writes them, and keep its registry across container restarts."""
    services = compose["services"]
    assert services["jobs"]["command"] == ["python", "-m", "stack", "submit-all", "--watch"]
    stack_dir = re.search(r"^ENV MARKETPULSE_STACK_DIR=(\S+)$", (REPO / "docker/Dockerfile").read_text(),
                          re.MULTILINE).group(1)
    flink_mount = f"flink-state:{stack_dir}/{flink.HOME.relative_to(paths.STACK_DIR)}"
    for name in ("jobmanager", "taskmanager", "jobs"):
        assert flink_mount in services[name]["volumes"], name
    assert f"jobs-registry:{stack_dir}/jobs" in services["jobs"]["volumes"]
    assert set(compose["volumes"]) >= {"flink-state", "jobs-registry"}


def test_sql_render_starts_from_a_savepoint_before_any_statement(tmp_path, monkeypatch):
    import stack.sql as sql
    from marketpulse.sqltemplate import split_statements

    monkeypatch.setattr(sql, "RENDERED_DIR", tmp_path / "out")
    script = tmp_path / "x.sql"
    script.write_text("SET 'pipeline.name' = 'x';\nCREATE TABLE t (a INT);\nINSERT INTO t VALUES (1);\n")
    statements = split_statements(render(script, SETTINGS, savepoint="/s/chk-7").read_text())
    assert statements[0] == "SET 'execution.savepoint.path' = '/s/chk-7'"
    assert statements[1:] == split_statements(script.read_text())


def test_paths_are_shown_relative_to_the_repository_only_when_inside_it(tmp_path):
    assert paths.shown(paths.REPO / ".stack" / "sql" / "x.sql") == Path(".stack/sql/x.sql")
    assert paths.shown(tmp_path / "x.sql") == tmp_path / "x.sql"  # MARKETPULSE_STACK_DIR elsewhere


@pytest.mark.parametrize(("taskmanagers", "slots", "each"), [(1, 12, 12), (2, 12, 6), (2, 5, 3), (4, 2, 1)])
def test_the_clusters_slots_are_split_over_its_taskmanagers(tmp_path, monkeypatch, taskmanagers, slots, each):
    monkeypatch.setattr(flink, "CONF_DIR", tmp_path)
    settings = load_settings(environ={"MARKETPULSE_FLINK_TASKMANAGERS": str(taskmanagers),
                                      "MARKETPULSE_FLINK_TASKMANAGER_SLOTS": str(slots)})
    config = yaml.safe_load((flink.render_conf(settings) / "config.yaml").read_text())
    assert config["taskmanager.numberOfTaskSlots"] == each


def test_each_flink_process_needs_a_reporter_port(monkeypatch):
    two = {"MARKETPULSE_FLINK_TASKMANAGERS": "2"}
    with pytest.raises(StackError, match=r"metrics.flink_reporter_ports = 9249-9250 has fewer ports than the "
                                         r"3 Flink processes \(1 JobManager \+ 2 TaskManagers\)"):
        flink.check_reporter_ports(load_settings(environ=two))
    flink.check_reporter_ports(load_settings(environ={**two, "MARKETPULSE_METRICS_FLINK_REPORTER_PORTS":
                                                      "9249-9251"}))
    flink.check_reporter_ports(SETTINGS)
    assert [flink.reporter_port_count(ports) for ports in ("9249", "9249-9250", "30249-30252")] == [1, 2, 4]
    with pytest.raises(StackError, match="at least one TaskManager"):
        flink.taskmanager_names(load_settings(environ={"MARKETPULSE_FLINK_TASKMANAGERS": "0"}))


def test_the_replication_factor_is_checked_against_the_brokers():
    assert kafka.checked_replication_factor(1, 1, "b:9092") == 1
    assert kafka.checked_replication_factor(3, 5, "b:9092") == 3
    with pytest.raises(StackError, match=r"^kafka.replication_factor = 3, but the Kafka cluster at b:9092 "
                                         r"has 1 broker: set it between 1 and 1$"):
        kafka.checked_replication_factor(3, 1, "b:9092")
    with pytest.raises(StackError, match="has 3 brokers: set it between 1 and 3"):
        kafka.checked_replication_factor(0, 3, "b:9092")
