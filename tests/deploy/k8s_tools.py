"""Render hookrelay's Kubernetes manifests with the real kustomize and validate what comes out.

* Rendering: ``deploy/kubernetes/kustomizectl.py`` (the pinned kustomize, built from the Go
  module proxy into ``.cache/kustomize/``). A missing Go fails the tests, it never skips them.
* Core objects (Deployment, Service, ...): ``kubernetes-validate`` in strict mode (unknown
  fields refused), against the upstream OpenAPI schemas of every version in
  ``KUBERNETES_VERSIONS``.
* Custom resources: the pydantic models generated from the CRDs of prometheus-operator
  (ServiceMonitor) and KEDA (ScaledObject), published on PyPI as ``cloudcoil-models-*``,
  validated with ``extra="forbid"`` and by field name as written (camelCase), which is what
  the API server's structural schema and ``kubectl apply --validate=strict`` enforce.
* The pod as the kubelet would start it: its environment (``env``, ``envFrom``, downward API)
  and the files of its ConfigMap volumes, so that ``hookrelay check`` can read the mounted
  configuration with the variables the Secret provides.
"""

from __future__ import annotations

import base64
import functools
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
from pydantic import BaseModel
from pydantic import ValidationError as ModelValidationError
from ruamel.yaml import YAML

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"
KUSTOMIZECTL = KUBERNETES_DIR / "kustomizectl.py"

OVERLAY_SECRET_FILES = ("signing-keys.env", "ingest-keys.env")
"""The files an overlay's real secrets are written to (made from their ``.example``)."""

KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
"""The oldest Kubernetes release the manifests claim to support (README) and the newest whose
schemas kubernetes-validate 1.37.0 ships; every core object must be valid in both."""


@functools.cache
def custom_resources() -> Mapping[tuple[str, str], type[BaseModel]]:
    """(apiVersion, kind) → the model generated from that CRD's OpenAPI schema.

    Imported on first use: the prometheus-operator models take seconds to build, which
    collecting the rest of the suite should not pay."""
    from cloudcoil.models.keda.v1alpha1 import ScaledObject
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

    return {
        ("monitoring.coreos.com/v1", "ServiceMonitor"): ServiceMonitor,
        ("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
    }


# Downward-API fields hookrelay's pod reads, with sample values (the kubelet fills in the
# real ones); any other fieldRef is reported rather than guessed.
DOWNWARD_API_SAMPLES = {
    "metadata.name": "hookrelay-5d8f7c9b6d-x2x7q",
    "metadata.namespace": "hookrelay",
    "spec.nodeName": "node-1",
}

KubeObject = dict[str, Any]


class ManifestError(AssertionError):
    """A rendered object that a validator refused, or a pod the kubelet could not start."""


def kustomize_build(kustomization: Path) -> list[KubeObject]:
    """Render ``kustomization`` (a folder) with the pinned kustomize; returns its objects.

    Raises ManifestError with kustomizectl's message when fetching or rendering fails (exit
    4 means Go is missing: install Go 1.24+).
    """
    result = subprocess.run(
        [sys.executable, str(KUSTOMIZECTL), "build", str(kustomization)],
        capture_output=True,
        text=True,
        timeout=900,  # the first call builds kustomize (about 30-60 s on two cores)
        check=False,
    )
    if result.returncode != 0:
        raise ManifestError(
            f"kustomizectl build {kustomization} exited {result.returncode}:\n{result.stderr}"
        )
    return [doc for doc in YAML(typ="safe").load_all(result.stdout) if doc is not None]


def copy_kubernetes_tree(target: Path) -> Path:
    """Copy deploy/kubernetes to ``target`` (kustomizations refer to each other by relative
    path, so they must move together); returns the copy's root. An overlay's real secrets
    (``OVERLAY_SECRET_FILES``) stay behind."""
    shutil.copytree(
        KUBERNETES_DIR,
        target,
        ignore=shutil.ignore_patterns("__pycache__", *OVERLAY_SECRET_FILES),
    )
    return target


def schema_problems(obj: KubeObject) -> list[str]:
    """Why ``obj`` is invalid, one line per validator that refused it; [] when valid."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    model = custom_resources().get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if model is not None:
        try:
            model.model_validate(obj, extra="forbid", by_alias=True, by_name=False)
        except ModelValidationError as e:
            return [f"{where} ({model.__module__}): {e}"]
        return []
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(part) for part in e.absolute_path)
            problems.append(f"{where} (Kubernetes {version}): {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{where}: no schema to validate it against: {e.message}")
    return problems


def assert_valid(objects: Iterable[KubeObject]) -> None:
    """Raise ManifestError listing every problem of every object in ``objects``."""
    problems = [line for obj in objects for line in schema_problems(obj)]
    if problems:
        raise ManifestError("\n".join(problems))


def find(objects: Iterable[KubeObject], kind: str, name: str | None = None) -> KubeObject:
    """The one object of ``kind`` (named ``name``, or generated from it with a hash suffix)."""
    matches = [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or _generated_from(obj["metadata"]["name"], name))
    ]
    if len(matches) != 1:
        raise ManifestError(f"expected one {kind} {name or ''}, found {len(matches)}")
    return matches[0]


def _generated_from(actual: str, name: str) -> bool:
    """kustomize's generators name objects ``<name>-<10-character hash>``."""
    return actual == name or (actual.startswith(f"{name}-") and len(actual) == len(name) + 11)


def only_container(deployment: KubeObject) -> KubeObject:
    """The Deployment's single container (hookrelay runs no sidecar)."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    if len(containers) != 1:
        raise ManifestError(f"expected one container, found {len(containers)}")
    container: KubeObject = containers[0]
    return container


@dataclass(frozen=True)
class _Sources:
    """The ConfigMaps and Secrets of a rendering, by name, as decoded text."""

    config_maps: dict[str, dict[str, str]]
    secrets: dict[str, dict[str, str]]

    @classmethod
    def of(cls, objects: Iterable[KubeObject]) -> _Sources:
        config_maps: dict[str, dict[str, str]] = {}
        secrets: dict[str, dict[str, str]] = {}
        for obj in objects:
            name = obj["metadata"]["name"]
            if obj["kind"] == "ConfigMap":
                config_maps[name] = dict(obj.get("data", {}))
            elif obj["kind"] == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
                secrets[name] = {**data, **obj.get("stringData", {})}
        return cls(config_maps, secrets)

    def lookup(self, kind: str, name: str, optional: bool) -> dict[str, str]:
        found = (self.secrets if kind == "secret" else self.config_maps).get(name)
        if found is None and not optional:
            raise ManifestError(f"the pod needs {kind} {name}, which the rendering lacks")
        return found or {}


def pod_environment(deployment: KubeObject, objects: Iterable[KubeObject]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: ``envFrom`` sources first, then
    ``env`` entries (which win), ConfigMap/Secret values from the same rendering and
    downward-API fields from DOWNWARD_API_SAMPLES.

    Raises ManifestError for a referenced ConfigMap, Secret or key that is missing (the
    kubelet would refuse to start the container) or an unknown source.
    """
    sources = _Sources.of(objects)
    container = only_container(deployment)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind = "secret" if "secretRef" in source else "configmap"
        ref = source.get("secretRef") or source["configMapRef"]
        values = sources.lookup(kind, ref["name"], ref.get("optional", False))
        env.update({source.get("prefix", "") + k: v for k, v in values.items()})
    for entry in container.get("env", []):
        env[entry["name"]] = _env_value(entry, sources)
    return env


def _env_value(entry: KubeObject, sources: _Sources) -> str:
    if "value" in entry:
        return str(entry["value"])
    source = entry.get("valueFrom", {})
    if "fieldRef" in source:
        field = source["fieldRef"]["fieldPath"]
        if field not in DOWNWARD_API_SAMPLES:
            raise ManifestError(f"env {entry['name']}: no sample for fieldRef {field}")
        return DOWNWARD_API_SAMPLES[field]
    for key, kind in (("secretKeyRef", "secret"), ("configMapKeyRef", "configmap")):
        if key in source:
            ref = source[key]
            values = sources.lookup(kind, ref["name"], ref.get("optional", False))
            if ref["key"] not in values:
                raise ManifestError(f"env {entry['name']}: {kind} {ref['name']} lacks {ref['key']}")
            return values[ref["key"]]
    raise ManifestError(f"env {entry['name']}: unsupported source {sorted(source)}")


def mount_config_maps(
    deployment: KubeObject, objects: Iterable[KubeObject], root: Path
) -> Callable[[str], Path]:
    """Write every ConfigMap volume of the container under ``root`` at its mountPath (so
    /etc/hookrelay becomes root/etc/hookrelay), as the kubelet projects it.

    Returns a function mapping an absolute path inside the container to its copy under
    ``root``. Raises ManifestError for a volume whose ConfigMap the rendering lacks.
    """
    sources = _Sources.of(objects)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
    for mount in only_container(deployment).get("volumeMounts", []):
        config_map = volumes[mount["name"]].get("configMap")
        if config_map is None:
            continue
        folder = root / PurePosixPath(mount["mountPath"]).relative_to("/")
        folder.mkdir(parents=True, exist_ok=True)
        files = sources.lookup("configmap", config_map["name"], config_map.get("optional", False))
        # With items, only the listed keys are projected, each at its own path.
        paths = {item["key"]: item["path"] for item in config_map.get("items", [])} or {
            key: key for key in files
        }
        for key, path in paths.items():
            if key not in files:
                raise ManifestError(f"volume {mount['name']}: ConfigMap lacks key {key}")
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(files[key], encoding="utf-8")

    def inside(path: str) -> Path:
        return root / PurePosixPath(path).relative_to("/")

    return inside
