"""Just enough of `kustomize build` to render deploy/k8s offline in tests (no kustomize binary is available).

Supported (what deploy/k8s uses): resources (files and directories), namespace, labels (without selectors),
images (newName/newTag), secretGenerator literals with disableNameSuffixHash, and patches: strategic-merge
files (target from the patch's kind/name) and inline JSON 6902 patches with a target (kind, regex name).
Anything else in a kustomization raises, so the manifests cannot silently rely on something unrendered.
"""
from __future__ import annotations

import base64
import copy
import re
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "generatorOptions",
             "secretGenerator", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "StorageClass",
                  "PersistentVolume", "IngressClass"}


class KustomizeError(ValueError):
    pass


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def build(directory: Path) -> list[dict]:
    kustomization_path = directory / "kustomization.yaml"
    if not kustomization_path.exists():
        raise KustomizeError(f"{directory} has no kustomization.yaml")
    k = yaml.safe_load(kustomization_path.read_text())
    unknown = set(k) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{kustomization_path}: unsupported fields {sorted(unknown)}")
    objects: list[dict] = []
    for entry in k.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            objects += build(target)
        elif target.is_file():
            objects += load_documents(target)
        else:
            raise KustomizeError(f"{kustomization_path}: resource {entry} does not exist")
    objects += _secrets(k, kustomization_path)
    for patch in k.get("patches", []):
        _apply_patch(objects, patch, directory)
    if "namespace" in k:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for container in _containers(objects):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', _tag or 'latest')}"
    for label_set in k.get("labels", []):
        if label_set.get("includeSelectors"):
            raise KustomizeError("labels.includeSelectors is not supported")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    _check_unique(objects, kustomization_path)
    return objects


def _secrets(k: dict, where: Path) -> list[dict]:
    generated = []
    for spec in k.get("secretGenerator", []):
        if not k.get("generatorOptions", {}).get("disableNameSuffixHash"):
            raise KustomizeError(f"{where}: generated names need disableNameSuffixHash here")
        if set(spec) - {"name", "literals"}:
            raise KustomizeError(f"{where}: only literal secrets are supported")
        data = {}
        for literal in spec["literals"]:
            key, _, value = literal.partition("=")
            data[key] = base64.b64encode(value.encode()).decode()
        generated.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                          "metadata": {"name": spec["name"]}, "data": data})
    return generated


def _containers(objects: list[dict]):
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        yield from pod.get("containers", [])
        yield from pod.get("initContainers", [])


def _apply_patch(objects: list[dict], patch: dict, directory: Path) -> None:
    if "path" in patch:
        docs = load_documents(directory / patch["path"])
        if len(docs) != 1:
            raise KustomizeError(f"{patch['path']}: one strategic-merge patch per file")
        body = docs[0]
        target = {"kind": body["kind"], "name": re.escape(body["metadata"]["name"])}
    else:
        body = yaml.safe_load(patch["patch"])
        target = patch["target"]
    matched = [o for o in objects if o["kind"] == target["kind"]
               and ("name" not in target or re.fullmatch(target["name"], o["metadata"]["name"]))]
    if not matched:
        raise KustomizeError(f"patch target {target} matches nothing")
    for obj in matched:
        if isinstance(body, list):
            for op in body:
                _json6902(obj, op)
        else:
            merged = _merge(obj, body)
            obj.clear()
            obj.update(merged)


def _json6902(obj: dict, op: dict) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent = obj
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if op["op"] in ("replace", "remove") and (last not in parent if isinstance(parent, dict) else False):
        raise KustomizeError(f"{op['op']} {op['path']}: nothing there in {obj['kind']}/{obj['metadata']['name']}")
    if op["op"] in ("add", "replace"):
        parent[last] = copy.deepcopy(op["value"])
    elif op["op"] == "remove":
        del parent[last]
    else:
        raise KustomizeError(f"unsupported op {op['op']}")


def _merge(base, patch):
    """Strategic merge, simplified: maps merge, lists of named maps merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(i, dict) and "name" in i for i in base + patch)):
        out = [copy.deepcopy(i) for i in base]
        for item in patch:
            index = next((n for n, existing in enumerate(out) if existing["name"] == item["name"]), None)
            if index is None:
                out.append(copy.deepcopy(item))
            else:
                out[index] = _merge(out[index], item)
        return out
    return copy.deepcopy(patch)


def _check_unique(objects: list[dict], where: Path) -> None:
    seen = set()
    for obj in objects:
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"{where}: {key} defined twice")
        seen.add(key)
