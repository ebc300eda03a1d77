"""The entry point of the Flink pods the Flink Kubernetes Operator starts (deploy/k8s/,
docker/flink-entrypoint.sh).

Flink's native Kubernetes mode runs `/docker-entrypoint.sh bash -c "kubernetes-jobmanager.sh ..."`, the layout
of Flink's own image: Flink's scripts on PATH, its configuration in /opt/flink/conf, a ConfigMap the operator
writes from the FlinkDeployment's flinkConfiguration plus what it derives (addresses, ports, memory from the
pod resources). This image holds Flink inside the apache-flink pip package and the jars in .deps, so the
entry point gives the command the environment `python -m stack` gives Flink (stack/flink.py, flink_env) and
a configuration folder with conf/flink/config.yaml merged in: the ConfigMap deploy/k8s generates from conf/
(kustomization.yaml there) is mounted at CONF_MOUNT. The operator's keys win, as the keys `python -m stack`
appends for its machine win locally (render_conf)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ruamel.yaml import YAML

from stack import flink, paths

# Where the pods mount the ConfigMap generated from conf/ (deploy/k8s/base: volumeMounts), and its file names.
CONF_MOUNT = Path("/etc/marketpulse/conf")
PIPELINE_FILE = "pipeline.toml"
FLINK_CONFIG_FILE = "flink-config.yaml"
# kubernetes.flink.conf.dir: where the operator mounts its configuration (Flink's default).
OPERATOR_CONF_DIR = Path("/opt/flink/conf")
CONFIG_FILE = "config.yaml"


def flatten(tree: dict, prefix: str = "") -> dict:
    """Flink reads `a: {b: 1}` and `a.b: 1` alike; flat keys let the two files be merged key by key."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def read_config(path: Path) -> dict:
    return flatten(YAML(typ="safe").load(path.read_text()) or {}) if path.exists() else {}


def merge_flink_conf(operator_dir: Path, ours: Path, target: Path) -> Path:
    """The operator's conf folder (its log4j files too) with config.yaml = our keys | the operator's keys."""
    target.mkdir(parents=True, exist_ok=True)
    # A mounted ConfigMap also holds ..data and timestamped folders (kubelet's atomic update): files only.
    for source in operator_dir.iterdir():
        if source.is_file() and not source.name.startswith("."):
            shutil.copy(source, target / source.name)
    merged = read_config(ours) | read_config(operator_dir / CONFIG_FILE)
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.width = 1 << 16  # env.java.opts.all is one long line: keep it one
    with open(target / CONFIG_FILE, "w") as out:
        yaml.dump(merged, out)
    return target


def main(argv: list[str]) -> None:
    env = flink.flink_env()
    env["FLINK_CONF_DIR"] = str(merge_flink_conf(OPERATOR_CONF_DIR, CONF_MOUNT / FLINK_CONFIG_FILE,
                                                 flink.CONF_DIR))
    env["PATH"] = f"{paths.pyflink_home() / 'bin'}{os.pathsep}{env['PATH']}"
    for folder in (flink.LOG_DIR, flink.PID_DIR):
        folder.mkdir(parents=True, exist_ok=True)
    os.chdir(paths.REPO)  # env.java.opts.taskmanager names the agent jar relative to the repository
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main(sys.argv[1:])
