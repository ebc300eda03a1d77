"""A small kustomize in Python: builds deploy/k8s/overlays/* without kubectl, for the tests.

It does what those kustomizations use, and refuses the rest: resources (files and folders), namespace,
labels (metadata only), configMapGenerator (files, literals), secretGenerator (literals, type),
generatorOptions with disableNameSuffixHash (deploy/k8s/base says why), and patches: a strategic-merge patch
file for the objects of a target (lists of named items merged by name) or an inline JSON 6902 patch (add,
replace, remove)."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path

import yaml

KNOWN = {"apiVersion", "kind", "resources", "namespace", "labels", "configMapGenerator", "secretGenerator",
         "generatorOptions", "patches"}
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


class KustomizeError(Exception):
    pass


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _file_entry(folder: Path, entry: str) -> tuple[str, str]:
    key, _, name = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise KustomizeError(f"{folder}: {name} is outside the kustomization's folder (kustomize refuses it)")
    return key, path.read_text()


def _generated(folder: Path, spec: dict, kind: str) -> dict:
    data = dict(_file_entry(folder, entry) for entry in spec.get("files", []))
    data |= dict(literal.split("=", 1) for literal in spec.get("literals", []))
    obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        obj["type"] = spec.get("type", "Opaque")
        obj["data"] = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    else:
        obj["data"] = data
    return obj


def _matches(obj: dict, target: dict) -> bool:
    if "kind" in target and not re.fullmatch(target["kind"], obj["kind"]):
        return False
    if "name" in target and not re.fullmatch(target["name"], obj["metadata"]["name"]):
        return False
    if "labelSelector" in target:
        labels = obj["metadata"].get("labels", {})
        for requirement in target["labelSelector"].split(","):
            key, value = requirement.split("=")
            if labels.get(key.strip()) != value.strip():
                return False
    return True


def strategic_merge(base, patch):
    """Maps merge key by key; lists whose items all have a name merge item by name; other lists are
    replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    named = isinstance(base, list) and isinstance(patch, list) and all(
        isinstance(item, dict) and "name" in item for item in base + patch)
    if named:
        merged = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, old in enumerate(merged) if old["name"] == item["name"]), None)
            if index is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[index] = strategic_merge(merged[index], item)
        return merged
    return copy.deepcopy(patch)


def json6902(obj: dict, operations: list[dict]) -> dict:
    obj = copy.deepcopy(obj)
    for operation in operations:
        *parents, last = [part.replace("~1", "/").replace("~0", "~")
                          for part in operation["path"].lstrip("/").split("/")]
        node = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key = int(last) if isinstance(node, list) and last != "-" else last
        if operation["op"] in ("replace", "add"):
            if isinstance(node, list) and operation["op"] == "add":
                node.insert(len(node) if key == "-" else key, operation["value"])
            else:
                if operation["op"] == "replace" and (key not in node if isinstance(node, dict) else False):
                    raise KustomizeError(f"replace of missing {operation['path']}")
                node[key] = operation["value"]
        elif operation["op"] == "remove":
            del node[key]
        else:
            raise KustomizeError(f"JSON patch op {operation['op']!r} is not supported here")
    return obj


def build(folder: Path) -> list[dict]:
    """The objects `kubectl kustomize folder` prints (in this module's order)."""
    folder = Path(folder)
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN
    if unknown:
        raise KustomizeError(f"{folder}/kustomization.yaml: {sorted(unknown)} not supported here")
    if (spec.get("configMapGenerator") or spec.get("secretGenerator")) and not spec.get(
            "generatorOptions", {}).get("disableNameSuffixHash"):
        raise KustomizeError(f"{folder}: generated names with a hash suffix are not supported here")
    objects: list[dict] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        objects += build(path) if path.is_dir() else load_documents(path)
    objects += [_generated(folder, item, "ConfigMap") for item in spec.get("configMapGenerator", [])]
    objects += [_generated(folder, item, "Secret") for item in spec.get("secretGenerator", [])]
    for patch in spec.get("patches", []):
        target = patch.get("target", {})
        if "path" in patch:
            strategic = yaml.safe_load((folder / patch["path"]).read_text())
            hits = [i for i, obj in enumerate(objects) if _matches(obj, target)]
            for i in hits:
                body = {key: value for key, value in strategic.items()
                        if key not in ("apiVersion", "kind", "metadata")}
                objects[i] = strategic_merge(objects[i], body)
        else:
            hits = [i for i, obj in enumerate(objects) if _matches(obj, target)]
            for i in hits:
                objects[i] = json6902(objects[i], yaml.safe_load(patch["patch"]))
        if not hits:
            raise KustomizeError(f"{folder}: patch target {target} matches nothing")
    for label in spec.get("labels", []):
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = spec["namespace"]
    return objects
