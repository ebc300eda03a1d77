"""The published schemas of the operators' custom resources, for validating deploy/k8s with jsonschema.

Each CRD comes from a package registry through its ordinary client, once, into .deps/k8s-crds (or Go's module
cache): the Flink Kubernetes Operator's from the flink-kubernetes-operator-api jar (Maven, META-INF/fabric8/),
CloudNativePG's from its Go module (config/crd/bases). Strimzi publishes its CRDs only with its GitHub
releases and its Helm chart: its Maven artifact io.strimzi:api holds the model classes, no CRD. What cannot
be had is `Unavailable(reason)`, which the tests turn into "skipped: <reason>"; a registry's refusal is
remembered (.deps/k8s-crds/*.unavailable, delete it to ask again) so that a run does not pay a Maven start to
hear it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import yaml

from stack import paths

CACHE = paths.DEPS_DIR / "k8s-crds"
# The releases deploy/k8s is written for (README, "Running on Kubernetes"): the first Flink Kubernetes
# Operator
# release with flinkVersion v2_2 was 1.13.0; 1.15.0 is the newest.
FLINK_OPERATOR_VERSION = "1.15.0"
# An older release whose API jar every Maven mirror seen so far serves: its FlinkDeployment schema checks the
# fields (flinkVersion's enum there ends at v1_20).
FLINK_OPERATOR_OLDER_VERSION = "1.10.0"
CNPG_VERSION = "v1.28.1"
STRIMZI_VERSION = "1.0.0"
CNPG_MODULE = "github.com/cloudnative-pg/cloudnative-pg"


class Unavailable(Exception):
    pass


def _remembered(name: str, fetch) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    refusal = CACHE / f"{name}.unavailable"
    if refusal.exists():
        raise Unavailable(refusal.read_text().strip() + f" (remembered in {paths.shown(refusal)})")
    try:
        return fetch()
    except Unavailable as err:
        refusal.write_text(str(err) + "\n")
        raise


def _parsed(name: str, text) -> dict:
    """A CRD of several hundred kB parses in seconds as YAML: it is parsed once and kept as JSON."""
    cached = CACHE / f"{name}.json"
    if not cached.exists():
        cached.write_text(json.dumps(yaml.load(text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))))
    return json.loads(cached.read_text())


def flink_operator_crd(version: str = FLINK_OPERATOR_VERSION, kind: str = "flinkdeployments") -> dict:
    artifact = f"flink-kubernetes-operator-api-{version}"

    def fetch() -> Path:
        jar = CACHE / f"{artifact}.jar"
        if not jar.exists():
            result = subprocess.run(
                ["mvn", "-B", "-q", "dependency:copy",
                 f"-Dartifact=org.apache.flink:flink-kubernetes-operator-api:{version}",
                 f"-DoutputDirectory={CACHE}"], capture_output=True, text=True, timeout=300)
            if result.returncode or not jar.exists():
                said = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
                cause = next((line.split("standalone-pom: ", 1)[-1][:300] for line in said.splitlines()
                              if line.startswith("[ERROR]")), said.strip()[-300:])
                raise Unavailable(f"org.apache.flink:flink-kubernetes-operator-api:{version} "
                                  f"is not served by the Maven repository this machine reaches: {cause}")
        return jar

    def text() -> bytes:
        if not shutil.which("mvn"):  # not remembered: a machine may get Maven later
            raise Unavailable("mvn is not installed")
        with zipfile.ZipFile(_remembered(artifact, fetch)) as archive:
            return archive.read(f"META-INF/fabric8/{kind}.flink.apache.org-v1.yml")

    return _parsed(f"{artifact}-{kind}", text)


def cnpg_crd(plural: str = "clusters") -> dict:
    def fetch() -> Path:
        result = subprocess.run(["go", "mod", "download", "-json", f"{CNPG_MODULE}@{CNPG_VERSION}"],
                                capture_output=True, text=True, timeout=300, cwd=paths.REPO)
        answer = json.loads(result.stdout or "{}")
        if result.returncode or "Dir" not in answer:
            raise Unavailable(f"{CNPG_MODULE}@{CNPG_VERSION}: {answer.get('Error') or result.stderr.strip()}")
        return Path(answer["Dir"])

    def text() -> str:
        if not shutil.which("go"):  # not remembered: a machine may get Go later
            raise Unavailable("go is not installed (the CRD comes from CloudNativePG's Go module)")
        module = _remembered(f"cnpg-{CNPG_VERSION}", fetch)
        return (module / f"config/crd/bases/postgresql.cnpg.io_{plural}.yaml").read_text()

    return _parsed(f"cnpg-{CNPG_VERSION}-{plural}", text)


def strimzi_crd(kind: str) -> dict:
    raise Unavailable(f"Strimzi {STRIMZI_VERSION} publishes its CRDs only with its GitHub release and "
                      "its Helm chart, neither a registry this machine reaches; io.strimzi:api on Maven "
                      "Central holds model classes, no CRD")


def json_schema(node):
    """A CRD's openAPIV3Schema as JSON Schema, as strict as `kubectl apply` (field validation Strict): an
    object with properties takes no other field unless x-kubernetes-preserve-unknown-fields says so (the API
    server would drop it silently); nullable allows null; x-kubernetes-int-or-string is either."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: json_schema(value) for key, value in node.items()
              if not key.startswith("x-kubernetes-") and key != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    if "properties" in node and "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
    return schema


def version_schema(crd: dict, api_version: str) -> dict:
    """The JSON Schema of one served version (apiVersion group/version) of a CRD."""
    version = api_version.split("/")[-1]
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            schema = json_schema(served["schema"]["openAPIV3Schema"])
            # The API server takes these on every object, whether the CRD's schema names them or not
            # (Fabric8's generated ones, the Flink operator's, name only spec and status).
            for field, kind in (("apiVersion", "string"), ("kind", "string"), ("metadata", "object")):
                schema["properties"].setdefault(field, {"type": kind})
            return schema
    raise KeyError(f"{crd['metadata']['name']} serves no version {version}")
