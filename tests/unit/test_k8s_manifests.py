"""deploy/k8s (README, "Running on Kubernetes") cannot run on these machines: no cluster. These tests hold it
to what can be checked without one: every manifest parses, the local overlay builds (tests/kustomize.py, and
`kubectl kustomize` where kubectl is installed), the images, ports, topics, tables and settings agree with
conf/ and the code, and the custom resources validate against their operators' published CRD schemas where a
registry this machine reaches serves them (tests/k8s_schemas.py); where none does, the test is skipped and
says why."""

import base64
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from marketpulse.config import POSTGRES_ROLES, load_settings, postgres_user
from stack import flink, kafka, kubernetes, paths
from tests import k8s_schemas
from tests.kustomize import build, load_documents

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy/k8s"
LOCAL = K8S / "overlays/local"
SETTINGS = load_settings(environ={})
# The PostgreSQL role each workload logs in as (conf/pipeline.toml [postgres]), and each role's Secret.
WORKLOAD_ROLES = {"marketpulse-init": "owner", "marketpulse-dashboard": "reader",
                  **{name: "writer" for name in ("marketpulse-datastream", "marketpulse-sql",
                                                 "marketpulse-generator", "marketpulse-alerts",
                                                 "marketpulse-forecaster")}}
ROLE_SECRETS = {"owner": "marketpulse-postgres", "writer": "marketpulse-postgres-writer",
                "reader": "marketpulse-postgres-reader"}


@pytest.fixture(scope="module")
def objects():
    return build(LOCAL)


def of_kind(objects, kind):
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def one(objects, kind, name):
    return of_kind(objects, kind)[name]


def containers(obj):
    spec = obj["spec"]["podTemplate"]["spec"] if obj["kind"] == "FlinkDeployment" else \
        obj["spec"]["template"]["spec"]
    return spec["containers"], spec.get("volumes", [])


def workloads(objects):
    return [obj for obj in objects if obj["kind"] in ("Deployment", "Job", "FlinkDeployment")]


def test_every_manifest_parses_and_names_its_kind():
    files = sorted(K8S.rglob("*.yaml")) + [REPO / "conf/kustomization.yaml"]
    assert len(files) >= 14
    for path in files:
        for doc in load_documents(path):
            assert doc["apiVersion"] and doc["kind"], path


def test_the_local_overlay_builds_every_object_once_in_its_namespace(objects):
    names = sorted((obj["kind"], obj["metadata"]["name"]) for obj in objects)
    assert len(names) == len(set(names))
    assert names == sorted([
        ("Namespace", "marketpulse"), ("ConfigMap", "marketpulse-conf"), ("ConfigMap", "marketpulse-env"),
        ("Secret", "marketpulse-postgres"), ("Secret", "marketpulse-postgres-writer"),
        ("Secret", "marketpulse-postgres-reader"), ("Service", "marketpulse-dashboard"),
        ("PersistentVolumeClaim", "flink-state"), ("Deployment", "marketpulse-alerts"),
        ("Deployment", "marketpulse-forecaster"),
        ("Deployment", "marketpulse-dashboard"), ("Deployment", "marketpulse-generator"),
        ("Job", "marketpulse-init"), ("FlinkDeployment", "marketpulse-datastream"),
        ("FlinkDeployment", "marketpulse-sql"), ("Kafka", "marketpulse"), ("KafkaNodePool", "dual-role"),
        ("KafkaTopic", "trades"), ("KafkaTopic", "anomalies"), ("KafkaTopic", "trades.injected"),
        ("KafkaTopic", "symbols"), ("Cluster", "marketpulse-pg")])
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "marketpulse", obj["metadata"]["name"]
        if obj["kind"] not in ("Namespace", "Secret"):  # the overlay's own, outside the base that labels
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "marketpulse"
    assert one(objects, "PersistentVolumeClaim", "flink-state")["spec"]["accessModes"] == ["ReadWriteOnce"]


@pytest.mark.skipif(not shutil.which("kubectl"), reason="skipped: kubectl is not installed")
def test_kubectl_kustomize_builds_the_same_objects(objects):
    printed = subprocess.run(["kubectl", "kustomize", str(LOCAL)], capture_output=True, text=True, check=True)
    real = {(obj["kind"], obj["metadata"]["name"]): obj for obj in yaml.safe_load_all(printed.stdout)}
    assert real == {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def test_the_conf_configmap_is_the_conf_files(objects):
    data = one(objects, "ConfigMap", "marketpulse-conf")["data"]
    assert data == {kubernetes.PIPELINE_FILE: (REPO / "conf/pipeline.toml").read_text(),
                    kubernetes.FLINK_CONFIG_FILE: (REPO / "conf/flink/config.yaml").read_text()}


def test_every_workload_runs_the_one_image_with_conf_settings_and_the_secret(objects):
    env = one(objects, "ConfigMap", "marketpulse-env")["data"]
    assert env["MARKETPULSE_CONFIG"] == str(kubernetes.CONF_MOUNT / kubernetes.PIPELINE_FILE)
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert len(workloads(objects)) == 7
    for obj in workloads(objects):
        image = obj["spec"]["image"] if obj["kind"] == "FlinkDeployment" else None
        (container,), volumes = containers(obj)
        assert (image or container["image"]) == compose["x-marketpulse"]["image"], obj["metadata"]["name"]
        assert container["envFrom"] == [{"configMapRef": {"name": "marketpulse-env"}}]
        # Only the password of the one role the workload logs in as, from that role's Secret.
        secret_env = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"]}
        role = WORKLOAD_ROLES[obj["metadata"]["name"]]
        assert secret_env == {f"MARKETPULSE_POSTGRES_{role.upper()}_PASSWORD": {"name": ROLE_SECRETS[role],
                                                                                "key": "password"}}
        mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
        assert mounts["conf"] == str(kubernetes.CONF_MOUNT)
        assert {"name": "conf", "configMap": {"name": "marketpulse-conf"}} in volumes


def test_every_marketpulse_variable_is_a_setting_and_names_a_service_of_the_cluster(objects):
    env = one(objects, "ConfigMap", "marketpulse-env")["data"]
    flat = SETTINGS.flat()
    for name in env:
        if name != "MARKETPULSE_CONFIG":  # the file itself (marketpulse/config.py, load_settings)
            assert name[len("MARKETPULSE_"):].lower() in flat, f"{name} is not a setting of conf/"
    kafka_cluster = one(objects, "Kafka", "marketpulse")
    (listener,) = kafka_cluster["spec"]["kafka"]["listeners"]
    assert env["MARKETPULSE_KAFKA_BOOTSTRAP_SERVERS"] == f"marketpulse-kafka-bootstrap:{listener['port']}"
    assert env["MARKETPULSE_POSTGRES_HOST"] == f"{next(iter(of_kind(objects, 'Cluster')))}-rw"
    # The dashboard's health view asks the DataStream job's cluster (the operator's <name>-rest service).
    assert env["MARKETPULSE_FLINK_REST_URL"] == f"http://marketpulse-datastream-rest:{flink.rest_host_port(SETTINGS)[1]}"
    assert env["MARKETPULSE_DASHBOARD_HOST"] == "0.0.0.0"


def test_postgres_cluster_and_secrets_have_the_conf_database_and_roles(objects):
    cluster = one(objects, "Cluster", "marketpulse-pg")["spec"]
    initdb = cluster["bootstrap"]["initdb"]
    assert (initdb["database"], initdb["owner"]) == (SETTINGS.postgres.database,
                                                     postgres_user(SETTINGS, "owner"))
    assert initdb["secret"]["name"] == ROLE_SECRETS["owner"]
    # The writer and the reader are CloudNativePG managed roles: logins, nothing more (db/grants.sql grants).
    managed = {role["name"]: role for role in cluster["managed"]["roles"]}
    assert managed == {postgres_user(SETTINGS, role): {
        "name": postgres_user(SETTINGS, role), "ensure": "present", "login": True,
        "passwordSecret": {"name": ROLE_SECRETS[role]}} for role in ("writer", "reader")}
    for role in POSTGRES_ROLES:
        secret = one(objects, "Secret", ROLE_SECRETS[role])
        assert secret["type"] == "kubernetes.io/basic-auth"  # what CloudNativePG takes for initdb and roles
        decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
        assert decoded["username"] == postgres_user(SETTINGS, role)
        assert decoded["password"] == f"local-{role}-only"  # the local overlay's, for that cluster alone
    assert "secretGenerator" not in (K8S / "base/kustomization.yaml").read_text()
    compose_pg = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["postgres"]
    assert one(objects, "Cluster", "marketpulse-pg")["spec"]["imageName"].endswith(
        ":" + compose_pg["image"].split(":")[1])


def test_topics_are_the_conf_topics_with_their_partitions(objects):
    topics = {obj["spec"]["topicName"]: obj for obj in of_kind(objects, "KafkaTopic").values()}
    partitions = {name: topic["spec"]["partitions"] for name, topic in topics.items()}
    assert partitions == kafka.wanted_topics(SETTINGS)
    assert {topic["spec"]["replicas"] for topic in topics.values()} == {SETTINGS.kafka.replication_factor}
    assert topics[SETTINGS.kafka.reference_topic]["spec"]["config"] == {"cleanup.policy": "compact"}
    for topic in topics.values():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "marketpulse"


def test_kafka_is_kraft_with_the_broker_settings_of_conf_kafka(objects):
    pool = one(objects, "KafkaNodePool", "dual-role")
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == "marketpulse"
    server_properties = (REPO / "conf/kafka/server.properties").read_text().splitlines()
    properties = dict(line.split("=", 1) for line in server_properties
                      if line and not line.startswith("#"))
    # Strimzi sets these itself and refuses them in spec.kafka.config.
    strimzi_owned = ("process.roles", "node.id", "controller.", "listeners", "advertised.", "listener.",
                     "inter.broker.", "log.dirs")
    expected = {key: value for key, value in properties.items() if not key.startswith(strimzi_owned)}
    config = one(objects, "Kafka", "marketpulse")["spec"]["kafka"]["config"]
    assert {key: str(value).lower() for key, value in config.items()} == expected
    pom = (REPO / "deps/pom.xml").read_text()
    kafka_version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)
    assert one(objects, "Kafka", "marketpulse")["spec"]["kafka"]["version"] == kafka_version


def test_flink_deployments_run_the_two_jobs_in_application_mode(objects):
    deployments = of_kind(objects, "FlinkDeployment")
    opt = Path(__import__("pyflink").__file__).parent / "opt"
    apache_flink = next(dep for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "dependencies"] if dep.startswith("apache-flink=="))
    flink_version = apache_flink.split("==")[1]
    assert {name: dep["spec"]["job"]["args"] for name, dep in deployments.items()} == {
        "marketpulse-datastream": ["-py", "/opt/marketpulse/" + SETTINGS.jobs.datastream],
        "marketpulse-sql": ["-py", "/opt/marketpulse/jobs/sql_pipeline.py"]}
    workdir = re.findall(r"^WORKDIR (\S+)", (REPO / "docker/Dockerfile").read_text(), re.M)[-1]
    for dep in deployments.values():
        spec = dep["spec"]
        assert spec["flinkVersion"] == "v" + "_".join(flink_version.split(".")[:2])
        job = spec["job"]
        assert "mode" not in spec or spec["mode"] == "native"  # application mode: a job in the deployment
        assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
        jar = job["jarURI"].removeprefix("local://")
        assert jar == f"{workdir}/.deps/flink-opt/flink-python-{flink_version}.jar"
        assert (opt / Path(jar).name).exists()  # the jar `python -m stack setup` links there
        assert (REPO / job["args"][1].removeprefix(workdir + "/")).exists()
        assert job["parallelism"] == SETTINGS.flink.parallelism
        assert job["upgradeMode"] == "savepoint" and job["state"] == "running"
        (container,), volumes = containers(dep)
        assert container["name"] == "flink-main-container"  # the operator's name for Flink's container
    datastream = deployments["marketpulse-datastream"]["spec"]["flinkConfiguration"]
    assert int(datastream["taskmanager.numberOfTaskSlots"]) >= SETTINGS.kafka.trades_partitions
    # The two clusters differ only in name, job and size: one pod template.
    sql, ds = (deployments[name]["spec"] for name in ("marketpulse-sql", "marketpulse-datastream"))
    assert sql["podTemplate"] == ds["podTemplate"]


def test_flink_configuration_takes_only_machine_keys_and_conf_flink_the_rest(objects, tmp_path, monkeypatch):
    repo_keys = set(yaml.safe_load((REPO / "conf/flink/config.yaml").read_text()))
    monkeypatch.setattr(flink, "CONF_DIR", tmp_path)
    machine_keys = set(yaml.safe_load((flink.render_conf(SETTINGS) / "config.yaml").read_text())) - repo_keys
    for name, dep in of_kind(objects, "FlinkDeployment").items():
        keys = set(dep["spec"]["flinkConfiguration"])
        assert not keys & repo_keys, f"{name} sets keys of conf/flink/config.yaml again: {keys & repo_keys}"
        assert keys - machine_keys <= {"high-availability.type", "high-availability.storageDir"}, name
    # Checkpoints, savepoints and HA metadata on the flink-state volume, where the image's Flink keeps
    # its state
    # (MARKETPULSE_STACK_DIR of docker/Dockerfile, as docker-compose.yml's flink-state volume).
    stack_dir = Path(re.search(r"^ENV MARKETPULSE_STACK_DIR=(\S+)$", (REPO / "docker/Dockerfile").read_text(),
                               re.M).group(1))
    state = stack_dir / flink.HOME.relative_to(paths.STACK_DIR)
    for name, dep in of_kind(objects, "FlinkDeployment").items():
        conf = dep["spec"]["flinkConfiguration"]
        assert conf["state.checkpoints.dir"] == f"file://{state / flink.CHECKPOINT_DIR.name / name}"
        assert conf["state.savepoints.dir"] == f"file://{state / flink.SAVEPOINT_DIR.name / name}"
        assert conf["high-availability.storageDir"] == f"file://{state / 'ha' / name}"
        (container,), volumes = containers(dep)
        # The state folders on the volume, each by its own name; the rest of the folder is the pod's own.
        on_volume = {mount["subPath"]: mount["mountPath"] for mount in container["volumeMounts"]
                     if mount["name"] == "flink-state"}
        assert on_volume == {folder: str(state / folder) for folder in ("checkpoints", "savepoints", "ha")}
        assert {"name": "flink-state", "persistentVolumeClaim": {"claimName": "flink-state"}} in volumes


def test_flink_pods_entry_point_merges_conf_flink_under_the_operators_keys(tmp_path):
    operator = tmp_path / "operator"
    operator.mkdir()
    # Nested, as a Flink 2 config.yaml may be written: the merge goes by flat key.
    (operator / "config.yaml").write_text("taskmanager:\n  memory:\n    process.size: 2048m\n"
                                          "rest.port: 8081\n")
    (operator / "log4j-console.properties").write_text("rootLogger.level = INFO\n")
    (operator / "..data").mkdir()
    merged = kubernetes.merge_flink_conf(operator, REPO / "conf/flink/config.yaml", tmp_path / "out")
    config = yaml.safe_load((merged / "config.yaml").read_text())
    ours = yaml.safe_load((REPO / "conf/flink/config.yaml").read_text())
    assert config["taskmanager.memory.process.size"] == "2048m"  # the operator's, from the pod resources
    assert config["rest.port"] == 8081
    assert config["restart-strategy.type"] == ours["restart-strategy.type"] == "exponential-delay"
    assert config["env.java.opts.all"] == ours["env.java.opts.all"]
    assert sorted(p.name for p in merged.iterdir()) == ["config.yaml", "log4j-console.properties"]
    dockerfile = (REPO / "docker/Dockerfile").read_text()
    assert "COPY docker/flink-entrypoint.sh /docker-entrypoint.sh" in dockerfile
    assert "python -m stack.kubernetes" in (REPO / "docker/flink-entrypoint.sh").read_text()


def test_services_and_commands_match_docker_compose(objects):
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    for name in ("generator", "alerts", "forecaster", "dashboard"):
        (container,), _ = containers(one(objects, "Deployment", f"marketpulse-{name}"))
        assert container["command"] == compose[name]["command"], name
    (init,), _ = containers(one(objects, "Job", "marketpulse-init"))
    assert init["command"] == compose["init"]["command"]
    (dashboard,), _ = containers(one(objects, "Deployment", "marketpulse-dashboard"))
    assert dashboard["ports"] == [{"name": "http", "containerPort": SETTINGS.dashboard.port}]
    service = one(objects, "Service", "marketpulse-dashboard")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": SETTINGS.dashboard.port, "targetPort": "http"}]
    deployment = one(objects, "Deployment", "marketpulse-dashboard")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_sql_pipeline_entry_point_reads_every_set_of_the_rendered_pipeline():
    from jobs.sql_pipeline import parse_set
    from marketpulse.sqltemplate import compose, render, sql_variables
    from stack.sqlgateway import is_job_statement, is_set, statements

    rendered = statements(render(compose(REPO / SETTINGS.jobs.sql_scripts[0]), sql_variables(SETTINGS)))
    sets = dict(parse_set(statement) for statement in rendered if is_set(statement))
    assert sets["pipeline.name"] == "marketpulse-sql-pipeline"
    assert sets["execution.checkpointing.interval"] == f"{SETTINGS.flink.checkpoint_interval_seconds} s"
    assert sum(map(is_job_statement, rendered)) == 1  # one statement set: one job for the application
    assert parse_set("SET 'a' = 'it''s'") == ("a", "it's")


def validate(objects, kind, crd):
    checked = 0
    for obj in of_kind(objects, kind).values():
        # No check_schema first (jsonschema.validate's): on a CRD of 400 kB it takes seconds and
        # proves nothing.
        jsonschema.Draft202012Validator(k8s_schemas.version_schema(crd, obj["apiVersion"])).validate(obj)
        checked += 1
    return checked


def test_flink_deployments_validate_against_the_operators_crd(objects):
    try:
        crd = k8s_schemas.flink_operator_crd()
    except k8s_schemas.Unavailable as err:
        pytest.skip(f"skipped: {err}")
    enum = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "flinkVersion"]["enum"]
    assert "v2_2" in enum
    assert validate(objects, "FlinkDeployment", crd) == 2


def test_flink_deployments_fit_the_older_operator_api_but_for_the_flink_version(objects):
    """Where the release the manifests are for is not served, an older one still checks every field name and
    type; its only objection must be flinkVersion v2_2, which it predates."""
    try:
        crd = k8s_schemas.flink_operator_crd(k8s_schemas.FLINK_OPERATOR_OLDER_VERSION)
    except k8s_schemas.Unavailable as err:
        pytest.skip(f"skipped: {err}")
    for obj in of_kind(objects, "FlinkDeployment").values():
        validator = jsonschema.Draft202012Validator(k8s_schemas.version_schema(crd, obj["apiVersion"]))
        errors = [(list(error.path), error.validator) for error in validator.iter_errors(obj)]
        assert errors == [(["spec", "flinkVersion"], "enum")]
        typo = {**obj, "spec": {**obj["spec"], "job": {**obj["spec"]["job"], "entryclass": "x"}}}
        assert (["spec", "job"], "additionalProperties") in [
            (list(error.path), error.validator) for error in validator.iter_errors(typo)]


def test_postgres_cluster_validates_against_the_cloudnative_pg_crd(objects):
    try:
        crd = k8s_schemas.cnpg_crd()
    except k8s_schemas.Unavailable as err:
        pytest.skip(f"skipped: {err}")
    assert validate(objects, "Cluster", crd) == 1
    broken = one(objects, "Cluster", "marketpulse-pg")
    broken = {**broken, "spec": {**broken["spec"], "instance": 1}}  # a typo the strict schema must catch
    schema = k8s_schemas.version_schema(crd, broken["apiVersion"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(broken)


@pytest.mark.parametrize("kind", ["Kafka", "KafkaNodePool", "KafkaTopic"])
def test_strimzi_resources_validate_against_the_strimzi_crds(objects, kind):
    try:
        crd = k8s_schemas.strimzi_crd(kind)
    except k8s_schemas.Unavailable as err:
        pytest.skip(f"skipped: {err}")
    assert validate(objects, kind, crd) >= 1


def test_flink_pods_entry_point_runs_the_operators_command_with_flinks_environment(tmp_path, monkeypatch):
    operator = tmp_path / "operator"
    operator.mkdir()
    (operator / "config.yaml").write_text("jobmanager.rpc.address: marketpulse-datastream\n")
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    (mounted / kubernetes.FLINK_CONFIG_FILE).write_text((REPO / "conf/flink/config.yaml").read_text())
    monkeypatch.setattr(kubernetes, "OPERATOR_CONF_DIR", operator)
    monkeypatch.setattr(kubernetes, "CONF_MOUNT", mounted)
    for name in ("CONF_DIR", "LOG_DIR", "PID_DIR"):
        monkeypatch.setattr(flink, name, tmp_path / name.lower())
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(kubernetes.os, "execvpe", lambda file, args, env: calls.append((file, args, env)))
    command = ["bash", "-c", "kubernetes-jobmanager.sh kubernetes-application"]  # what Flink's pods run
    kubernetes.main(command)
    ((file, args, env),) = calls
    assert (file, args) == ("bash", command)
    assert Path.cwd() == paths.REPO
    bin_dir = Path(env["PATH"].split(":")[0])
    for script in ("kubernetes-jobmanager.sh", "kubernetes-taskmanager.sh"):
        assert (bin_dir / script).exists()
    assert env["FLINK_LIB_DIR"] == str(paths.FLINK_LIB_DIR)
    config = yaml.safe_load((Path(env["FLINK_CONF_DIR"]) / "config.yaml").read_text())
    assert config["jobmanager.rpc.address"] == "marketpulse-datastream"
    assert config["execution.checkpointing.mode"] == "EXACTLY_ONCE"
