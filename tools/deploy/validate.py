"""Renders every kustomize overlay of deploy/kubernetes (kustomize 5.5, as
`kubectl kustomize` does since kubectl 1.32) and validates each object:
Kubernetes kinds with kubernetes-validate in strict mode (unknown fields refused),
KServe's ServingRuntime and InferenceService against the pinned kserve wheel's
field lists (kserve_schema.py) with the Kubernetes types inside them (containers,
volumes, ...) again through kubernetes-validate's strict schemas, and the one
Prometheus Operator kind against a checked field list.

    python -m tools.deploy.validate [--kserve-wheel W]   # from the repository root
"""

import argparse
import functools
import pathlib
import re
import subprocess
import sys

import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes_validate import utils as kv_utils

from tools.deploy import kserve_schema

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
OVERLAYS = ["cpu", "gpu", "replicas"]
KSERVE_FILES = ["deploy/kserve/servingruntime.yaml", "deploy/kserve/inferenceservice.yaml"]
# The oldest Kubernetes with GA gRPC probes (1.27) and the newest schema set.
VERSIONS = ["1.27.0", "1.37.0"]
KSERVE_ROOTS = {("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
                ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService"}
# monitoring.coreos.com/v1 ServiceMonitor: the fields deploy/ may use, from the
# Prometheus Operator API reference (ServiceMonitorSpec, Endpoint).
SERVICE_MONITOR = {
    "": {"apiVersion", "kind", "metadata", "spec"},
    "spec": {"selector", "endpoints", "namespaceSelector", "jobLabel"},
    "spec.endpoints[]": {"port", "path", "interval", "scrapeTimeout", "scheme"},
}


def render_text(overlay: str) -> str:
    """`kustomize build` of one overlay, with the kustomize tools/bootstrap pins."""
    from tools.deploy import cache
    return subprocess.run([str(cache.go_tool("kustomize")), "build",
                           str(ROOT / "deploy/kubernetes/overlays" / overlay)],
                          check=True, capture_output=True, text=True).stdout


def render(overlay: str) -> list:
    return [d for d in yaml.safe_load_all(render_text(overlay)) if d]


def default_wheel() -> pathlib.Path:
    from tools.deploy import cache
    return cache.kserve_wheel()


@functools.cache
def _strict_dir(version: str) -> str:
    return f"kubernetes-json-schema/v{kv_utils.major_minor(version)}.0-local-strict"


def validate_k8s_type(value, type_name: str, version: str) -> list:
    """Validates `value` against the strict schema of Kubernetes type `type_name`
    (V1Container -> container-v1.json); returns error strings."""
    stem = re.sub(r"^V1", "", type_name).lower()
    folder = pathlib.Path(kubernetes_validate.__file__).parent / _strict_dir(version)
    matches = sorted(folder.glob(f"{stem}-v1.json")) or sorted(folder.glob(f"{stem}-*-v1.json"))
    if len(matches) != 1:
        return [f"no single Kubernetes schema for {type_name}: {[m.name for m in matches]}"]
    schema = kv_utils.schema_contents(f"{_strict_dir(version)}/{matches[0].name}", version)
    defs = kv_utils.schema_contents(f"{_strict_dir(version)}/_definitions.json", version)
    registry = referencing.Resource.from_contents(defs) @ (
        referencing.Resource.from_contents(schema) @ referencing.Registry())
    validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(value)]


PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}


def check_kserve(value, type_name: str, models: dict, version: str, path: str) -> list:
    """Walks `value` as KServe type `type_name`; unknown keys are errors."""
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [e for i, v in enumerate(value)
                for e in check_kserve(v, type_name[5:-1], models, version, f"{path}[{i}]")]
    if type_name.startswith("dict("):
        inner = type_name[5:-1].split(", ", 1)[1]
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        return [e for k, v in value.items()
                for e in check_kserve(v, inner, models, version, f"{path}.{k}")]
    if type_name in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[type_name]) and not (
            type_name == "int" and isinstance(value, bool))
        return [] if ok else [f"{path}: expected {type_name}, got {value!r}"]
    if type_name in models:
        if not isinstance(value, dict):
            return [f"{path}: expected an object ({type_name})"]
        fields = models[type_name]
        errors = [f"{path}.{k}: unknown field of {type_name}" for k in value if k not in fields]
        return errors + [e for k, v in value.items() if k in fields
                         for e in check_kserve(v, fields[k], models, version, f"{path}.{k}")]
    if type_name.startswith("V1"):
        return [f"{path}.{e}" for e in validate_k8s_type(value, type_name, version)]
    return [f"{path}: type {type_name} is not known"]


def check_service_monitor(obj: dict) -> list:
    errors = [f"{k}: unknown field" for k in obj if k not in SERVICE_MONITOR[""]]
    spec = obj.get("spec", {})
    errors += [f"spec.{k}: unknown field" for k in spec if k not in SERVICE_MONITOR["spec"]]
    for i, endpoint in enumerate(spec.get("endpoints", [])):
        errors += [f"spec.endpoints[{i}].{k}: unknown field" for k in endpoint
                   if k not in SERVICE_MONITOR["spec.endpoints[]"]]
    return errors


def check_object(obj: dict, models: dict, version: str) -> list:
    """Returns the error strings for one rendered or KServe object."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in KSERVE_ROOTS:
        return check_kserve(obj, KSERVE_ROOTS[key], models, version, obj["kind"])
    if key == ("monitoring.coreos.com/v1", "ServiceMonitor"):
        return check_service_monitor(obj)
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    return []


def all_objects() -> list:
    """(source, object) for every overlay's rendering and every KServe file."""
    found = [(f"overlays/{o}", obj) for o in OVERLAYS for obj in render(o)]
    for name in KSERVE_FILES:
        found += [(name, obj) for obj in yaml.safe_load_all((ROOT / name).read_text()) if obj]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kserve-wheel", type=pathlib.Path, help="kserve wheel to read")
    args = parser.parse_args()
    models = kserve_schema.load(args.kserve_wheel or default_wheel())
    failures = 0
    for version in VERSIONS:
        for source, obj in all_objects():
            errors = check_object(obj, models, version)
            name = f"{source}: {obj['kind']}/{obj['metadata']['name']} (Kubernetes {version})"
            print(("FAIL " if errors else "ok   ") + name)
            for error in errors:
                print("     " + error)
            failures += bool(errors)
    print(f"{failures} objects failed" if failures else "every object is valid")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
