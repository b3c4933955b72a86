"""A small stand-in for ``kustomize build`` / ``kubectl kustomize``, so deploy/k8s renders offline.

Neither kustomize nor kubectl is on the CI machines, and the tests download nothing. This renders
exactly the kustomize features deploy/k8s uses, with kustomize's semantics, and refuses everything
else (an unknown kustomization field, a remote base, a patch it cannot apply), so a feature added
to the manifests fails here loudly instead of rendering wrong. Where kubectl is installed,
tests/deploy/test_k8s.py compares the output with ``kubectl kustomize``.

Supported:

* ``resources``: local YAML files (several documents each) and folders holding a kustomization
  (built recursively, the way kustomize builds bases). No URLs.
* ``configMapGenerator``: ``name`` + ``files`` (``path`` or ``key=path``, inside the kustomization's
  folder, as kustomize's default load restrictor demands), only with
  ``generatorOptions: {disableNameSuffixHash: true}``: the name hash and the renaming of references
  to it are not implemented.
* ``patches``: ``- path: file.yaml`` holding a strategic-merge patch of an ``apps/v1`` Deployment,
  matched by kind and name (and namespace when the patch names one). Maps merge; ``null`` deletes a
  key; lists of containers, initContainers, volumes, env, imagePullSecrets (merged by name),
  volumeMounts (by mountPath) and ports (by containerPort) merge item by item, new items appended;
  every other list is replaced. ``$patch`` / ``$setElementOrder`` directives, JSON 6902 patches and
  ``target:`` selectors are not supported.
* ``namespace``: set on every namespaced object (not on cluster-scoped kinds, Namespace included).
* ``labels``: ``pairs`` added to every object's ``metadata.labels`` and, with ``includeTemplates``,
  to the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets and Jobs. Only
  ``includeSelectors: false`` (selectors are never touched); ``commonLabels`` is not supported.
* ``images``: ``name`` with ``newName`` and/or ``newTag`` on the containers and initContainers of
  Pods and of those workloads' pod templates. No ``digest``.

Transformers run in kustomize's order for one kustomization: patches, namespace, labels, images.
Objects come out in kustomize's default ("legacy") kind order, then by name.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "labels",
        "images",
        "configMapGenerator",
        "generatorOptions",
        "patches",
    }
)
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "StorageClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "IngressClass",
        "PriorityClass",
        "RuntimeClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "APIService",
        "CSIDriver",
        "VolumeAttachment",
    }
)
# Kinds whose spec.template is a pod template (for `labels: includeTemplates` and `images`).
POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
# kustomize's legacy output order (api/resid/gvk.go: orderFirst); other kinds follow, then these last.
ORDER_FIRST = (
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
)
ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
# Strategic-merge keys of the lists a Deployment patch may merge (k8s.io/api patchMergeKey tags).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not support, or is broken."""


def build(folder: Path | str) -> list[dict[str, Any]]:
    """The objects ``kustomize build folder`` would print, as plain data, in kustomize's order."""
    return sorted(_build(Path(folder).resolve()), key=_order)


def _build(folder: Path) -> list[dict[str, Any]]:
    kustomization = _read_kustomization(folder)
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources") or []:
        objects.extend(_load_resource(folder, entry))
    objects.extend(_generate_config_maps(folder, kustomization))
    for patch in kustomization.get("patches") or []:
        _apply_patch(folder, patch, objects)
    if kustomization.get("namespace"):
        _set_namespace(objects, kustomization["namespace"])
    for label in kustomization.get("labels") or []:
        _add_labels(objects, label)
    for image in kustomization.get("images") or []:
        _set_image(objects, image)
    _check_unique(objects, folder)
    return objects


def _read_kustomization(folder: Path) -> dict[str, Any]:
    found = [folder / name for name in KUSTOMIZATION_FILES if (folder / name).is_file()]
    if len(found) != 1:
        raise KustomizeError(f"{folder}: expected exactly one of {', '.join(KUSTOMIZATION_FILES)}")
    data = yaml.safe_load(found[0].read_text()) or {}
    if not isinstance(data, dict):
        raise KustomizeError(f"{found[0]}: not a mapping")
    unsupported = sorted(set(data) - SUPPORTED_FIELDS)
    if unsupported:
        raise KustomizeError(f"{found[0]}: fields this renderer does not support: {', '.join(unsupported)}")
    if data.get("kind", "Kustomization") != "Kustomization":
        raise KustomizeError(f"{found[0]}: kind {data['kind']!r} is not supported (only Kustomization)")
    return data


def _inside(folder: Path, relative: str) -> Path:
    if "://" in relative or relative.startswith(("github.com/", "git@")):
        raise KustomizeError(f"{folder}: remote resource {relative!r} is not supported (offline renderer)")
    return (folder / relative).resolve()


def _load_resource(folder: Path, entry: str) -> list[dict[str, Any]]:
    path = _inside(folder, entry)
    if path.is_dir():
        return _build(path)
    if not path.is_file():
        raise KustomizeError(f"{folder}: resource {entry!r} does not exist")
    objects = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for obj in objects:
        if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("metadata", {}).get("name"):
            raise KustomizeError(f"{path}: every document needs kind and metadata.name")
        if obj["kind"].endswith("List"):
            raise KustomizeError(f"{path}: List objects are not supported")
    return objects


def _generate_config_maps(folder: Path, kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    generators = kustomization.get("configMapGenerator") or []
    options = kustomization.get("generatorOptions") or {}
    if set(options) - {"disableNameSuffixHash"}:
        raise KustomizeError(f"{folder}: generatorOptions other than disableNameSuffixHash are not supported")
    if generators and options.get("disableNameSuffixHash") is not True:
        raise KustomizeError(
            f"{folder}: configMapGenerator needs generatorOptions.disableNameSuffixHash: true here "
            "(the name hash kustomize would add, and the renamed references, are not implemented)"
        )
    maps = []
    for generator in generators:
        if set(generator) - {"name", "files"}:
            raise KustomizeError(
                f"{folder}: configMapGenerator supports only name and files, got {generator}"
            )
        data: dict[str, str] = {}
        for item in generator.get("files") or []:
            key, sep, relative = str(item).partition("=")
            if not sep:
                key, relative = Path(item).name, item
            path = _inside(folder, relative)
            if not path.is_relative_to(folder):
                raise KustomizeError(f"{folder}: {relative} is outside the kustomization's folder")
            if key in data:
                raise KustomizeError(f"{folder}: key {key} appears twice in {generator['name']}")
            data[key] = path.read_text()
        maps.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
        )
    return maps


def _apply_patch(folder: Path, patch: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    if set(patch) != {"path"}:
        raise KustomizeError(f"{folder}: only `patches: - path: FILE` (strategic merge) is supported")
    path = _inside(folder, patch["path"])
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) != ("apps/v1", "Deployment"):
            raise KustomizeError(f"{path}: only strategic-merge patches of apps/v1 Deployments are supported")
        name = doc.get("metadata", {}).get("name")
        namespace = doc.get("metadata", {}).get("namespace")
        targets = [
            obj
            for obj in objects
            if obj["kind"] == doc["kind"]
            and obj["metadata"]["name"] == name
            and (namespace is None or obj["metadata"].get("namespace") == namespace)
        ]
        if len(targets) != 1:
            raise KustomizeError(
                f"{path}: patch must match exactly one {doc['kind']} {name!r}, got {len(targets)}"
            )
        _merge(targets[0], doc, str(path))


def _merge(base: dict[str, Any], patch: dict[str, Any], where: str) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeError(f"{where}: patch directive {key} is not supported")
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, where)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(base.get(key), list):
            _merge_list(base[key], value, MERGE_KEYS[key], where)
        else:
            base[key] = copy.deepcopy(value)


def _merge_list(base: list[Any], patch: list[Any], merge_key: str, where: str) -> None:
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise KustomizeError(f"{where}: every item of a merged list needs {merge_key}: {item}")
        match = [existing for existing in base if existing.get(merge_key) == item[merge_key]]
        if match:
            _merge(match[0], item, where)
        else:
            base.append(copy.deepcopy(item))


def _set_namespace(objects: list[dict[str, Any]], namespace: str) -> None:
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED_KINDS:
            obj["metadata"]["namespace"] = namespace


def _add_labels(objects: list[dict[str, Any]], label: dict[str, Any]) -> None:
    if set(label) - {"pairs", "includeSelectors", "includeTemplates"}:
        raise KustomizeError(
            f"labels: only pairs, includeSelectors and includeTemplates are supported: {label}"
        )
    if label.get("includeSelectors"):
        raise KustomizeError("labels: includeSelectors: true is not supported (it rewrites selectors)")
    pairs = {str(key): str(value) for key, value in (label.get("pairs") or {}).items()}
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(pairs)
        if label.get("includeTemplates") and obj["kind"] in POD_TEMPLATE_KINDS:
            template = obj.setdefault("spec", {}).setdefault("template", {})
            template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec of a Pod or of a workload's pod template (empty for other kinds)."""
    if obj["kind"] == "Pod":
        return [obj.get("spec", {})]
    if obj["kind"] in POD_TEMPLATE_KINDS:
        return [obj.get("spec", {}).get("template", {}).get("spec", {})]
    return []


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``registry/name:tag@digest`` -> (name with registry, tag, digest); a registry port is no tag."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _set_image(objects: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    if set(entry) - {"name", "newName", "newTag"} or "name" not in entry:
        raise KustomizeError(f"images: only name, newName and newTag are supported: {entry}")
    for obj in objects:
        for spec in pod_specs(obj):
            for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
                name, tag, digest = split_image(container["image"])
                if name != entry["name"]:
                    continue
                new_name = entry.get("newName", name)
                new_tag = str(entry["newTag"]) if "newTag" in entry else tag
                if "newTag" in entry:
                    digest = None
                container["image"] = (
                    new_name + (f":{new_tag}" if new_tag else "") + (f"@{digest}" if digest else "")
                )


def _check_unique(objects: list[dict[str, Any]], folder: Path) -> None:
    seen = set()
    for obj in objects:
        key = object_id(obj)
        if key in seen:
            raise KustomizeError(f"{folder}: {key} appears twice")
        seen.add(key)


def object_id(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    """(apiVersion's group, kind, namespace, name): what identifies an object in a build."""
    group = obj.get("apiVersion", "").rpartition("/")[0]
    return group, obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _order(obj: dict[str, Any]) -> tuple[int, str, str, str]:
    kind = obj["kind"]
    if kind in ORDER_FIRST:
        rank = ORDER_FIRST.index(kind)
    elif kind in ORDER_LAST:
        rank = len(ORDER_FIRST) + 1 + ORDER_LAST.index(kind)
    else:
        rank = len(ORDER_FIRST)
    return rank, kind, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
