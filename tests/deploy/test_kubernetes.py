"""deploy/kubernetes: every rendering is valid for Kubernetes and for hookrelay.

Each kustomization is rendered by the real kustomize (deploy/kubernetes/kustomizectl.py) and
every object is validated strictly: core kinds with kubernetes-validate, ServiceMonitor and
ScaledObject with the models generated from their CRDs (tests/deploy/k8s_tools.py). The
ConfigMap is then mounted as the kubelet would and checked by the real `hookrelay check`,
with exactly the environment the Deployment gives the container (the Secret's keys and the
downward API), and the settings it yields are held against the Deployment: shutdown
deadlines inside terminationGracePeriodSeconds, the admin listener on the probed port, KEDA
pointing at the same Kafka group and topic. The ingest component (components/ingest) gets the
same treatment with its own ConfigMap, Secret and Deployment, plus its Service and Ingress,
and its selectors and the daemon's are held apart.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import promql_parser
import pytest

from hookrelay.app.supervisor import HARD_DEADLINE_MARGIN_S
from hookrelay.config import Settings, config_warnings, load_settings, resolve_workers
from hookrelay.config.fields import split_host_port
from hookrelay.config.ingest import BATCH_PATH
from hookrelay.ops.metrics import Metrics
from tests.deploy.example_secrets import (
    PLACEHOLDER_WARNING,
    env_file_values,
    flagged_as_placeholder,
)
from tests.deploy.k8s_tools import (
    KUBERNETES_DIR,
    KUSTOMIZECTL,
    OVERLAY_SECRET_FILES,
    REPO_ROOT,
    KubeObject,
    ManifestError,
    assert_valid,
    copy_kubernetes_tree,
    find,
    kustomize_build,
    mount_config_maps,
    only_container,
    pod_environment,
    schema_problems,
)

# The first test to render builds kustomize (go install, about a minute on a cold machine).
pytestmark = pytest.mark.timeout(600)

# What each rendering must contain, by kind: nothing silently dropped or added.
BASE_KINDS = [
    "ConfigMap",
    "Deployment",
    "PodDisruptionBudget",
    "Secret",
    "Service",
    "ServiceAccount",
]
# components/ingest: its Deployment, ConfigMap, Secret, budget, Ingress, and two Services (the
# endpoint and the metrics).
INGEST_KINDS = [
    "ConfigMap",
    "Deployment",
    "Ingress",
    "PodDisruptionBudget",
    "Secret",
    "Service",
    "Service",
]
EXPECTED_KINDS = {
    "base": BASE_KINDS,
    "example overlay": sorted(
        [*BASE_KINDS, *INGEST_KINDS, "Namespace", "ScaledObject", "ServiceMonitor"]
    ),
    "prometheus trigger": sorted([*BASE_KINDS, "ScaledObject", "ServiceMonitor"]),
    "ingest component": sorted([*BASE_KINDS, *INGEST_KINDS, "ServiceMonitor"]),
}
RENDERINGS = list(EXPECTED_KINDS)
WITH_CONFIG = ["base", "example overlay"]
WITH_KEDA = ["example overlay", "prometheus trigger"]
# The component as shipped (its example ConfigMap and Secret), and as the overlay replaces them.
WITH_INGEST = ["ingest component", "example overlay"]

DAEMON, INGEST = "hookrelay", "hookrelay-ingest"
# The command each Deployment's container runs (its args start with it, then -c FILE).
COMMANDS = {DAEMON: "run", INGEST: "ingest"}

# Labels Prometheus adds to every series it scrapes through a ServiceMonitor; a query may
# match on them although hookrelay does not export them.
TARGET_LABELS = {"namespace", "pod", "service", "job", "instance", "container", "endpoint"}

# The process needs a moment after hookrelay's own hard deadline to exit and flush its logs
# before the kubelet's SIGKILL.
EXIT_MARGIN_S = 5

PROMETHEUS_VARIANT = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../base]
components:
  - ../../components/servicemonitor
  - ../../components/keda
  - ../../components/keda-prometheus-trigger
"""

INGEST_VARIANT = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../base]
components:
  - ../../components/servicemonitor
  - ../../components/ingest
"""

# The ingest component's example secrets, and the overlay's, which a user copies.
INGEST_KEY_EXAMPLES = [
    KUBERNETES_DIR / "components" / "ingest" / "ingest-keys.example.env",
    KUBERNETES_DIR / "overlays" / "example" / "ingest" / "ingest-keys.env.example",
]


@pytest.fixture(scope="module")
def kube_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes as a user would prepare it: the example overlay's
    signing-keys.env and ingest/ingest-keys.env made from their .example, plus kustomizations
    using the other components."""
    root = copy_kubernetes_tree(tmp_path_factory.mktemp("k8s") / "kubernetes")
    overlay = root / "overlays" / "example"
    for example in (
        overlay / "signing-keys.env.example",
        overlay / "ingest/ingest-keys.env.example",
    ):
        shutil.copy(example, example.with_suffix(""))
    for name, text in (("prometheus-trigger", PROMETHEUS_VARIANT), ("ingest", INGEST_VARIANT)):
        variant = root / "variants" / name
        variant.mkdir(parents=True)
        (variant / "kustomization.yaml").write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def renderings(kube_tree: Path) -> dict[str, list[KubeObject]]:
    """Every kustomization rendered once by the pinned kustomize."""
    folders = {
        "base": kube_tree / "base",
        "example overlay": kube_tree / "overlays" / "example",
        "prometheus trigger": kube_tree / "variants" / "prometheus-trigger",
        "ingest component": kube_tree / "variants" / "ingest",
    }
    return {name: kustomize_build(folder) for name, folder in folders.items()}


@pytest.fixture(params=RENDERINGS)
def rendered(
    request: pytest.FixtureRequest, renderings: dict[str, list[KubeObject]]
) -> tuple[str, list[KubeObject]]:
    """(name, objects) of each rendering in turn."""
    return request.param, renderings[request.param]


def mount(objects: list[KubeObject], root: Path, name: str = DAEMON) -> tuple[Path, dict[str, str]]:
    """Lay the ConfigMap volumes of Deployment ``name`` out under ``root`` as the kubelet
    mounts them; returns (the config file its ``run -c`` or ``ingest -c`` names, under root;
    the container's environment)."""
    deployment = find(objects, "Deployment", name)
    inside = mount_config_maps(deployment, objects, root)
    args = only_container(deployment)["args"]
    assert args[:2] == [COMMANDS[name], "-c"], args
    return inside(args[2]), pod_environment(deployment, objects)


def rendered_settings(objects: list[KubeObject], root: Path) -> Settings:
    """The settings hookrelay loads in the pod of this rendering."""
    config_file, env = mount(objects, root)
    return load_settings(config_file, env=env)


@dataclass(frozen=True)
class Configured:
    """A rendering whose ConfigMap is mounted under tmp_path, and what hookrelay makes of it."""

    objects: list[KubeObject]
    config_file: Path
    env: dict[str, str]
    settings: Settings


@pytest.fixture(params=WITH_CONFIG)
def configured(
    request: pytest.FixtureRequest, renderings: dict[str, list[KubeObject]], tmp_path: Path
) -> Configured:
    """Each rendering that carries hookrelay's configuration, mounted and loaded."""
    objects = renderings[request.param]
    config_file, env = mount(objects, tmp_path)
    return Configured(objects, config_file, env, load_settings(config_file, env=env))


@pytest.fixture(params=WITH_INGEST)
def ingest_configured(
    request: pytest.FixtureRequest, renderings: dict[str, list[KubeObject]], tmp_path: Path
) -> Configured:
    """Each rendering with the ingest component: its ConfigMap mounted as the ingest pod
    gets it, and loaded with that pod's environment."""
    objects = renderings[request.param]
    config_file, env = mount(objects, tmp_path, INGEST)
    settings = load_settings(config_file, env=env)
    assert settings.ingest is not None, "the ingest ConfigMap has no ingest section"
    return Configured(objects, config_file, env, settings)


# ── Schemas ──────────────────────────────────────────────────────────────────────────────────────


def test_every_rendered_object_is_valid(rendered: tuple[str, list[KubeObject]]) -> None:
    rendering, objects = rendered
    assert sorted(obj["kind"] for obj in objects) == EXPECTED_KINDS[rendering]
    assert_valid(objects)


def test_the_validators_refuse_unknown_and_mistyped_fields(
    renderings: dict[str, list[KubeObject]],
) -> None:
    """Each validator really is strict: one mistake per object, each one reported."""
    objects = renderings["example overlay"]
    deployment = copy.deepcopy(find(objects, "Deployment", "hookrelay"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    service = copy.deepcopy(find(objects, "Service", "hookrelay-metrics"))
    service["spec"]["ports"][0]["port"] = "9464"
    monitor = copy.deepcopy(find(objects, "ServiceMonitor", "hookrelay"))
    monitor["spec"]["endpoint"] = monitor["spec"].pop("endpoints")
    scaled = copy.deepcopy(find(objects, "ScaledObject", "hookrelay"))
    scaled["spec"]["max_replica_count"] = scaled["spec"].pop("maxReplicaCount")
    unscaled = copy.deepcopy(find(objects, "ScaledObject", "hookrelay"))
    del unscaled["spec"]["scaleTargetRef"]
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    # The backend as networking.k8s.io/v1beta1 wrote it, which v1 no longer has.
    ingress = copy.deepcopy(find(objects, "Ingress", INGEST))
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    backend["serviceName"] = backend.pop("service")["name"]

    expected = {
        "livenesProbe": deployment,
        "port": service,
        "endpoint": monitor,
        "max_replica_count": scaled,
        "scaleTargetRef": unscaled,
        "no schema": unknown,
        "serviceName": ingress,
    }
    for mistake, obj in expected.items():
        problems = schema_problems(obj)
        assert problems, f"{obj['kind']} with {mistake!r} was accepted"
        assert all(mistake in line for line in problems), problems
    for obj in objects:
        assert schema_problems(obj) == []


# ── The configuration in the ConfigMap ───────────────────────────────────────────────────────────


def hookrelay_check(config_file: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real `hookrelay check -c config_file`, with ``env`` (and PATH) as its environment."""
    return subprocess.run(
        [sys.executable, "-m", "hookrelay", "check", "-c", str(config_file)],
        env={**env, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_config_map_passes_hookrelay_check(configured: Configured) -> None:
    """`hookrelay check` on the mounted files, with only the container's environment."""
    config_file, env = configured.config_file, configured.env
    result = hookrelay_check(config_file, env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    ok = next(i for i, line in enumerate(lines) if ": ok (" in line)
    assert lines[ok].endswith("enabled)"), result.stdout
    assert lines[ok + 1 :] == [lines[ok + 1]] and lines[ok + 1].startswith("  workers: ")
    # The example secrets are placeholders, and check says so for each of them: nothing else.
    warnings = config_warnings(configured.settings)
    assert warnings, "the example's placeholder secrets must be flagged"
    assert all(w.endswith(PLACEHOLDER_WARNING) for w in warnings), warnings
    assert len(warnings) == len(configured.settings.hooks) + 1  # every key and the token
    assert (result.stdout + result.stderr).count("warning:") == len(warnings)
    # Every hook signs with a key the Secret provides (none is written in the file).
    secret = find(configured.objects, "Secret", "hookrelay-signing-keys")
    assert configured.settings.hooks
    for hook in configured.settings.hooks:
        assert hook.signing_key is not None, hook.id
        assert hook.signing_key.get_secret_value() in env.values()
    assert set(env) >= set(secret["data"])


def test_shutdown_fits_inside_the_termination_grace_period(configured: Configured) -> None:
    shutdown = configured.settings.shutdown
    pod = find(configured.objects, "Deployment", "hookrelay")["spec"]["template"]["spec"]
    termination_grace_s = pod["terminationGracePeriodSeconds"]
    assert shutdown.grace_s < shutdown.hard_deadline_s
    assert shutdown.hard_deadline_s + EXIT_MARGIN_S <= termination_grace_s, (
        f"terminationGracePeriodSeconds {termination_grace_s} must exceed "
        f"shutdown.hard_deadline_s {shutdown.hard_deadline_s} by {EXIT_MARGIN_S} s"
    )


def test_the_cpu_limit_sets_the_worker_count_and_memory_follows_it(
    configured: Configured,
) -> None:
    """workers: auto in a pod is its CPU limit rounded up (the cgroup quota): without a
    limit it would be the node's cores. Memory must hold every worker (256Mi each, README
    "Worker processes") and the supervisor (128Mi) when there are several; the grace period
    must outlast the supervisor, which exits HARD_DEADLINE_MARGIN_S after its workers."""
    container = find(configured.objects, "Deployment", "hookrelay")["spec"]["template"]["spec"][
        "containers"
    ][0]
    limits = container["resources"]["limits"]
    setting = configured.settings.workers
    if setting == "auto":
        assert "cpu" in limits, "workers: auto needs a CPU limit"
    cpu_limit = cpu_cores(limits["cpu"]) if "cpu" in limits else None
    workers = resolve_workers(setting, cpus=lambda: 64, quota=lambda: cpu_limit)
    if cpu_limit is not None:
        assert workers <= math.ceil(cpu_limit), "more workers than the CPU limit lets run"
    needed_mi = 256 * workers + (128 if workers > 1 else 0)
    assert memory_mi(limits["memory"]) >= needed_mi
    pod = find(configured.objects, "Deployment", "hookrelay")["spec"]["template"]["spec"]
    supervisor_deadline_s = configured.settings.shutdown.hard_deadline_s + HARD_DEADLINE_MARGIN_S
    assert supervisor_deadline_s <= pod["terminationGracePeriodSeconds"]


def cpu_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_mi(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_probes_and_scrapes_reach_the_admin_listener(configured: Configured) -> None:
    objects, admin = configured.objects, configured.settings.admin
    assert admin.host in ("0.0.0.0", "::"), "admin.listen must accept connections from outside"
    deployment = find(objects, "Deployment", "hookrelay")
    container = only_container(deployment)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"admin": admin.port}
    probes = {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/healthz", "admin"),
        "livenessProbe": ("/healthz", "admin"),
        "readinessProbe": ("/readyz", "admin"),
    }
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = find(objects, "Service", "hookrelay-metrics")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("metrics", "admin")
    ]
    assert service["spec"]["publishNotReadyAddresses"] is True
    monitors = [obj for obj in objects if obj["kind"] == "ServiceMonitor"]
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [
            ("metrics", "/metrics")
        ]


def test_every_pod_meets_the_restricted_pod_security_standard(
    rendered: tuple[str, list[KubeObject]],
) -> None:
    """The daemon's pod, and the ingest pod where the rendering has one."""
    rendering, objects = rendered
    deployments = [obj for obj in objects if obj["kind"] == "Deployment"]
    expected = [DAEMON, INGEST] if rendering in WITH_INGEST else [DAEMON]
    assert sorted(d["metadata"]["name"] for d in deployments) == expected
    for deployment in deployments:
        assert_restricted(deployment)
    namespaces = [obj for obj in objects if obj["kind"] == "Namespace"]
    for namespace in namespaces:
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def assert_restricted(deployment: KubeObject) -> None:
    pod = deployment["spec"]["template"]["spec"]
    container = only_container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False
    assert not any(key in pod for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert all("hostPath" not in volume for volume in pod["volumes"])
    assert all(
        mount.get("readOnly") for mount in container["volumeMounts"] if mount["name"] == "config"
    )
    for section in ("requests", "limits"):
        assert set(container["resources"][section]) == {"cpu", "memory"}


def test_each_disruption_budget_covers_its_pods(rendered: tuple[str, list[KubeObject]]) -> None:
    objects = rendered[1]
    for deployment in (obj for obj in objects if obj["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        budget = find(objects, "PodDisruptionBudget", name)["spec"]
        assert budget["selector"] == deployment["spec"]["selector"]
        assert budget["maxUnavailable"] == 1
        assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        replicas = deployment["spec"].get("replicas")
        if replicas is None:  # KEDA owns the count
            replicas = find(objects, "ScaledObject", name)["spec"]["minReplicaCount"]
        assert replicas >= 2, f"{name}: one replica left during a drain needs at least two"


def selected_pods(selector: dict[str, str], objects: list[KubeObject]) -> set[str]:
    """The Deployments whose pod template labels ``selector`` (matchLabels) matches."""
    return {
        obj["metadata"]["name"]
        for obj in objects
        if obj["kind"] == "Deployment"
        and selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
    }


def pod_selectors(objects: list[KubeObject]) -> list[tuple[str, str, dict[str, str]]]:
    """(where, owner, matchLabels) of every selector of pods in the rendering: each
    Deployment's own and its spread constraints', each budget's and each Service's; the owner
    is the Deployment the object goes with (hookrelay-ingest for the ingest component's
    objects, all named hookrelay-ingest*)."""
    found = []
    for obj in objects:
        kind, name, spec = obj["kind"], obj["metadata"]["name"], obj.get("spec", {})
        owner = INGEST if name.startswith(INGEST) else DAEMON
        if kind == "Deployment":
            found.append((f"Deployment/{name}", owner, spec["selector"]["matchLabels"]))
            for index, spread in enumerate(spec["template"]["spec"]["topologySpreadConstraints"]):
                labels = spread["labelSelector"]["matchLabels"]
                found.append((f"Deployment/{name} spread [{index}]", owner, labels))
        elif kind == "PodDisruptionBudget":
            found.append((f"{kind}/{name}", owner, spec["selector"]["matchLabels"]))
        elif kind == "Service":
            found.append((f"{kind}/{name}", owner, spec["selector"]))
    return found


def test_the_daemon_and_ingest_selectors_take_only_their_own_pods(
    rendered: tuple[str, list[KubeObject]],
) -> None:
    """The daemon's Deployment, budget, metrics Service and spread constraints never count an
    ingest pod, and the ingest component's never count a daemon pod: a budget or a spread
    over both would let a drain take every replica of one of them."""
    objects = rendered[1]
    selectors = pod_selectors(objects)
    assert len(selectors) >= 5
    for where, owner, labels in selectors:
        assert selected_pods(labels, objects) == {owner}, where


@pytest.mark.parametrize("rendering", ["base"])
def test_base_replicas_stay_within_the_partitions(
    renderings: dict[str, list[KubeObject]], rendering: str, tmp_path: Path
) -> None:
    objects = renderings[rendering]
    deployment = find(objects, "Deployment", "hookrelay")
    assert (
        deployment["spec"]["replicas"]
        <= rendered_settings(objects, tmp_path).kafka.topic_partitions
    )


# ── The ingest component ─────────────────────────────────────────────────────────────────────────


def test_the_ingest_config_map_passes_hookrelay_check(ingest_configured: Configured) -> None:
    """`hookrelay check` on the mounted ingest file, with only the ingest container's
    environment: it warns that the file has no hooks (fine for a file only hookrelay ingest
    reads) and about placeholder secrets, nothing else; every secret comes from the Secret."""
    config_file, env, settings = (
        ingest_configured.config_file,
        ingest_configured.env,
        ingest_configured.settings,
    )
    result = hookrelay_check(config_file, env)
    assert result.returncode == 0, result.stderr
    assert "(0 hooks, 0 enabled; ingest: 1 source, batch API on)\n  workers: " in result.stdout
    warnings = config_warnings(settings)
    no_hooks = [w for w in warnings if w.endswith("(fine for a file only hookrelay ingest reads)")]
    assert len(no_hooks) == 1, warnings
    assert all(w.endswith(PLACEHOLDER_WARNING) for w in warnings if w not in no_hooks), warnings
    assert (result.stdout + result.stderr).count("warning:") == len(warnings)
    ingest = settings.ingest
    assert ingest is not None and ingest.sources and ingest.batch is not None
    secret = find(ingest_configured.objects, "Secret", "hookrelay-ingest-keys")
    from_secret = {env[name] for name in secret["data"]}
    for source in ingest.sources:
        assert source.signing_key.get_secret_value() in from_secret, source.id
    assert ingest.batch.token.get_secret_value() in from_secret


def test_hookrelay_check_flags_the_ingest_placeholder_secrets(
    ingest_configured: Configured,
) -> None:
    settings = ingest_configured.settings
    assert settings.ingest is not None
    placeholders = [w for w in config_warnings(settings) if w.endswith(PLACEHOLDER_WARNING)]
    assert len(placeholders) == len(settings.ingest.sources) + 1  # every key and the token


@pytest.mark.parametrize("example", INGEST_KEY_EXAMPLES, ids=lambda path: path.parent.name)
def test_the_ingest_example_secrets_are_placeholders_check_knows(
    example: Path, tmp_path: Path
) -> None:
    """Each value starts the way check recognises a placeholder (shown where it looks for
    them: a hook's signing key), so a copy left unfilled is flagged once check looks at
    ingest secrets too."""
    values = env_file_values(example)
    assert set(values) == {"LOGTO_SIGNING_KEY", "HOOKRELAY_BATCH_TOKEN"}
    for name, value in values.items():
        assert flagged_as_placeholder(value, tmp_path), name


def test_ingest_shutdown_fits_inside_the_termination_grace_period(
    ingest_configured: Configured,
) -> None:
    """The kubelet counts terminationGracePeriodSeconds from the start of preStop: the sleep,
    then hookrelay's own deadline after SIGTERM, must fit before its SIGKILL."""
    settings = ingest_configured.settings
    assert settings.ingest is not None
    deployment = find(ingest_configured.objects, "Deployment", INGEST)
    pod = deployment["spec"]["template"]["spec"]
    program, seconds = only_container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert program == "/bin/sleep"
    assert 0 < float(seconds) <= 10, "long enough for the routes to drain, no longer"
    hard_deadline_s = settings.shutdown.hard_deadline_s
    assert settings.ingest.write_timeout_s < hard_deadline_s
    assert float(seconds) + hard_deadline_s + EXIT_MARGIN_S <= pod["terminationGracePeriodSeconds"]


def test_the_ingest_prestop_sleep_is_a_program_the_image_has() -> None:
    """/bin/sleep comes from coreutils, an Essential package of every Debian image: the image
    must stay on Debian's slim Python (a distroless one would need Kubernetes' own sleep
    handler instead)."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    bases = [line.split("=", 1)[1] for line in dockerfile.splitlines() if "PYTHON_IMAGE=" in line]
    assert len(bases) == 1, bases
    assert bases[0].startswith("python:3.11") and "-slim-bookworm@sha256:" in bases[0]


def test_ingest_probes_and_scrapes_reach_the_metrics_listener(
    ingest_configured: Configured,
) -> None:
    objects, ingest = ingest_configured.objects, ingest_configured.settings.ingest
    assert ingest is not None
    listen, metrics = split_host_port(ingest.listen), split_host_port(ingest.metrics_listen)
    assert listen is not None and metrics is not None
    for host, _ in (listen, metrics):
        assert host in ("0.0.0.0", "::"), "must accept connections from outside the pod"
    deployment = find(objects, "Deployment", INGEST)
    container = only_container(deployment)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"ingest": listen[1], "metrics": metrics[1]}
    probes = {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/healthz", "metrics"),
        "livenessProbe": ("/healthz", "metrics"),
        "readinessProbe": ("/readyz", "metrics"),
    }
    service = find(objects, "Service", "hookrelay-ingest-metrics")
    assert selected_pods(service["spec"]["selector"], objects) == {INGEST}
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("metrics", "metrics")
    ]
    assert service["spec"]["publishNotReadyAddresses"] is True
    # The daemon's ServiceMonitor scrapes both metrics Services, and never the endpoint.
    (monitor,) = [obj for obj in objects if obj["kind"] == "ServiceMonitor"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = {
        obj["metadata"]["name"]
        for obj in objects
        if obj["kind"] == "Service" and selector.items() <= obj["metadata"]["labels"].items()
    }
    assert scraped == {"hookrelay-metrics", "hookrelay-ingest-metrics"}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_the_ingest_service_and_ingress_route_to_the_ingest_port(
    ingest_configured: Configured,
) -> None:
    """Ingress → Service port 80 → container port "ingest" (ingest.listen); Logto's routes
    are exposed, the batch API is not."""
    objects, ingest = ingest_configured.objects, ingest_configured.settings.ingest
    assert ingest is not None
    service = find(objects, "Service", INGEST)
    assert service["spec"]["type"] == "ClusterIP"
    assert selected_pods(service["spec"]["selector"], objects) == {INGEST}
    ((name, port, target),) = [
        (p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]
    ]
    assert (port, target) == (80, "ingest")
    ingress = find(objects, "Ingress", INGEST)["spec"]
    assert ingress["ingressClassName"] == "nginx"
    ((rule,),) = [ingress["rules"]]
    assert [rule["host"]] == [host for tls in ingress["tls"] for host in tls["hosts"]]
    assert all(tls["secretName"] for tls in ingress["tls"])
    paths = rule["http"]["paths"]
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["name"] == INGEST
        assert backend["port"] in ({"number": port}, {"name": name})
        assert path["pathType"] == "Prefix"
    exposed = [path["path"] for path in paths]
    for source in ingest.sources:
        assert any(prefix_matches(prefix, source.route) for prefix in exposed), source.route
    assert not any(prefix_matches(prefix, BATCH_PATH) for prefix in exposed)


def prefix_matches(prefix: str, path: str) -> bool:
    """An Ingress ``Prefix`` path matches whole path elements: /logto takes /logto/x, not
    /logtox."""
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def test_the_ingest_deployment_keeps_its_replicas_and_runs_the_daemons_image(
    renderings: dict[str, list[KubeObject]],
) -> None:
    """Patches meant for the daemon (KEDA takes over its replica count) leave the ingest
    Deployment alone, and both run the one image an overlay names."""
    for rendering in WITH_INGEST:
        objects = renderings[rendering]
        ingest, daemon = find(objects, "Deployment", INGEST), find(objects, "Deployment", DAEMON)
        assert ingest["spec"]["replicas"] == 2, rendering
        assert only_container(ingest)["image"] == only_container(daemon)["image"], rendering
        assert ingest["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# ── KEDA ─────────────────────────────────────────────────────────────────────────────────────────


def test_keda_scales_this_deployment_on_this_consumer_group(
    renderings: dict[str, list[KubeObject]], tmp_path: Path
) -> None:
    """The Kafka trigger reads the same brokers, group and topic as the ConfigMap, and never
    scales past the partitions; the Deployment leaves the replica count to the autoscaler."""
    objects = renderings["example overlay"]
    deployment = find(objects, "Deployment", "hookrelay")
    kafka = rendered_settings(objects, tmp_path).kafka
    scaled = find(objects, "ScaledObject", "hookrelay")["spec"]
    assert scaled["scaleTargetRef"] == {"name": deployment["metadata"]["name"]}
    assert "replicas" not in deployment["spec"]
    assert 2 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= kafka.topic_partitions
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert metadata["bootstrapServers"].split(",") == list(kafka.bootstrap_servers)
    assert metadata["consumerGroup"] == kafka.group_id
    assert metadata["topic"] in kafka.topics
    assert metadata["allowIdleConsumers"] == "false"


def test_the_prometheus_trigger_queries_hookrelays_lag_metric(
    renderings: dict[str, list[KubeObject]], tmp_path: Path
) -> None:
    objects = renderings["prometheus trigger"]
    deployment = find(objects, "Deployment", "hookrelay")
    scaled = find(objects, "ScaledObject", "hookrelay")["spec"]
    assert "replicas" not in deployment["spec"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    expression = promql_parser.parse(trigger["metadata"]["query"])
    assert isinstance(expression, promql_parser.AggregateExpr)
    selector = expression.expr
    assert isinstance(selector, promql_parser.VectorSelector)
    # The metric exists with these labels: a wrong label name raises ValueError here.
    own_labels = {
        m.name: m.value for m in selector.matchers.matchers if m.name not in TARGET_LABELS
    }
    metrics = Metrics()
    labels = {"partition": "0", **own_labels}
    gauge = getattr(metrics, selector.name.removeprefix("hookrelay_"))
    gauge.labels(**labels).set(1)
    # ... and under this exported name, as Prometheus sees it (not only a Python attribute).
    assert metrics.registry.get_sample_value(selector.name, labels) == 1
    assert own_labels["topic"] in rendered_settings(objects, tmp_path).kafka.topics


# ── The pod, started as the kubelet would ──────────────────────────────────────────────────────

# Run inside the namespace: one request (URL, method, body, headers as JSON), print
# "<status> <body>" (503 is an answer, not an error).
HTTP_REQUEST = """
import json, sys, urllib.error, urllib.request
url, method, body, headers = sys.argv[1], sys.argv[2], sys.argv[3].encode(), json.loads(sys.argv[4])
request = urllib.request.Request(url, data=body or None, method=method, headers=headers)
try:
    answer = urllib.request.urlopen(request, timeout=3)
    status, body = answer.status, answer.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
print(status, body.decode())
"""


def http_in_namespace_of(
    pid: int,
    port: int,
    path: str,
    *,
    method: str = "GET",
    body: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """Request http://127.0.0.1:port/path from inside process ``pid``'s network namespace;
    returns (status, body), or (0, the error) when nothing answered."""
    namespace = f"--net=/proc/{pid}/ns/net"
    url = f"http://127.0.0.1:{port}{path}"
    probe = subprocess.run(
        ["nsenter", namespace, sys.executable, "-c", HTTP_REQUEST,
         url, method, body, json.dumps(headers or {})],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    status, _, answer = probe.stdout.partition(" ")
    return (int(status), answer) if status.isdigit() else (0, probe.stderr)


def start_in_own_network(
    container: KubeObject, config_file: Path, env: dict[str, str]
) -> subprocess.Popen[str]:
    """The container's command (its args, the config file under the mount root) with exactly
    ``env``, in a new network namespace whose loopback the shell brings up before exec'ing
    hookrelay, as a pod has its own."""
    command, flag, _ = container["args"]
    run = [sys.executable, "-m", "hookrelay", command, flag, str(config_file)]
    return subprocess.Popen(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *run],
        env={**env, "PATH": os.environ["PATH"]},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until_started(process: subprocess.Popen[str], container: KubeObject) -> None:
    """Poll the startupProbe as the kubelet does, failing once it would give up."""
    startup = container["startupProbe"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    http = startup["httpGet"]
    budget_s = startup["periodSeconds"] * startup["failureThreshold"]
    started = time.monotonic()
    while http_in_namespace_of(process.pid, ports[http["port"]], http["path"])[0] != 200:
        # unshare needs root (CAP_SYS_ADMIN), as CI has; its refusal shows here.
        assert process.poll() is None, f"exited during start-up: {process.communicate()[0]}"
        assert time.monotonic() - started < budget_s, "the startupProbe would give up"
        time.sleep(0.2)


def test_the_pod_starts_answers_its_probes_and_stops_in_time(configured: Configured) -> None:
    """hookrelay run with the mounted ConfigMap and only the pod's environment, in a network
    namespace of its own as a pod has: the probes and the scrape get their answers on the
    container port (not ready, since the cluster's Kafka is not here), and SIGTERM ends it
    with status 0 before hard_deadline_s, hence well inside terminationGracePeriodSeconds."""
    config_file, settings = configured.config_file, configured.settings
    container = only_container(find(configured.objects, "Deployment", DAEMON))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe")}
    readiness = container["readinessProbe"]["httpGet"]
    daemon = start_in_own_network(container, config_file, configured.env)
    try:
        wait_until_started(daemon, container)
        for kind, http in probes.items():
            answer = http_in_namespace_of(daemon.pid, ports[http["port"]], http["path"])
            assert answer[0] == 200, (kind, answer)
        # With workers (the base runs workers: auto), each says why it is not ready once it
        # listens: "worker N: starting" until then (CI, loaded, saw it at the first look).
        deadline = time.monotonic() + 30
        while True:
            status, body = http_in_namespace_of(
                daemon.pid, ports[readiness["port"]], readiness["path"]
            )
            if "kafka unreachable" in body or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 503 and "kafka unreachable" in body, body
        status, body = http_in_namespace_of(daemon.pid, ports["admin"], "/metrics")
        assert status == 200 and "hookrelay_ready 0.0" in body

        daemon.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        output, _ = daemon.communicate(timeout=settings.shutdown.hard_deadline_s + EXIT_MARGIN_S)
        assert daemon.returncode == 0, output
        assert time.monotonic() - stopping < settings.shutdown.hard_deadline_s
        assert '"event":"daemon_stopped"' in output
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()


def test_the_ingest_pod_starts_answers_and_stops_in_time(ingest_configured: Configured) -> None:
    """hookrelay ingest as its pod runs it, in a network namespace of its own: the probes get
    their answers on the metrics port (healthy, not ready: "kafka: ..."), Logto's route on the
    ingest port checks the signature with the key from the Secret (a signed event is answered
    503, since Kafka is not here; an unsigned one 401), and SIGTERM ends it with status 0,
    with nothing in flight well before the time it gives requests in progress."""
    config_file, settings = ingest_configured.config_file, ingest_configured.settings
    ingest = settings.ingest
    assert ingest is not None
    container = only_container(find(ingest_configured.objects, "Deployment", INGEST))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    probes = {
        kind: container[kind]["httpGet"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    source = ingest.sources[0]
    event = '{"event":"User.Created","createdAt":"2026-08-21T09:15:42.123Z","data":{"id":"u1"}}'
    key = source.signing_key.get_secret_value().encode()
    signed = {
        "Content-Type": "application/json",
        "logto-signature-sha-256": hmac.new(key, event.encode(), hashlib.sha256).hexdigest(),
    }
    process = start_in_own_network(container, config_file, ingest_configured.env)
    try:
        wait_until_started(process, container)
        answers = {
            kind: http_in_namespace_of(process.pid, ports[http["port"]], http["path"])
            for kind, http in probes.items()
        }
        assert answers["startupProbe"][0] == answers["livenessProbe"][0] == 200, answers
        status, body = answers["readinessProbe"]
        assert status == 503 and '"kafka: ' in body, body

        def post(headers: dict[str, str]) -> tuple[int, str]:
            return http_in_namespace_of(
                process.pid, ports["ingest"], source.route,
                method="POST", body=event, headers=headers,
            )  # fmt: skip

        assert post({"Content-Type": "application/json"})[0] == 401
        status, body = post(signed)
        assert status == 503 and '"not_written"' in body, (status, body)
        status, body = http_in_namespace_of(process.pid, ports["metrics"], "/metrics")
        assert status == 200 and "hookrelay_ready 0.0" in body
        assert f'hookrelay_ingest_requests_total{{source="{source.id}",status="503"}} 1.0' in body

        process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        output, _ = process.communicate(timeout=settings.shutdown.hard_deadline_s + EXIT_MARGIN_S)
        assert process.returncode == 0, output
        assert time.monotonic() - stopping < ingest.write_timeout_s
        assert '"event":"ingest_stopped"' in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


# ── Failure modes a user meets ───────────────────────────────────────────────────────────────────


def test_the_overlay_refuses_to_render_without_its_signing_keys(tmp_path: Path) -> None:
    """No signing-keys.env, no rendering: the placeholder keys of the base never leak into a
    real deployment."""
    root = copy_kubernetes_tree(tmp_path / "kubernetes")
    with pytest.raises(ManifestError, match=r"signing-keys\.env"):
        kustomize_build(root / "overlays" / "example")


def test_the_overlay_refuses_to_render_without_its_ingest_keys(tmp_path: Path) -> None:
    """The same for the ingest component's placeholder secrets."""
    root = copy_kubernetes_tree(tmp_path / "kubernetes")
    overlay = root / "overlays" / "example"
    shutil.copy(overlay / "signing-keys.env.example", overlay / "signing-keys.env")
    with pytest.raises(ManifestError, match=r"ingest-keys\.env"):
        kustomize_build(overlay)


@pytest.mark.parametrize(
    ("shipped", "secret", "config_map", "example"),
    [
        ("base", "hookrelay-signing-keys", "hookrelay-config", "signing-keys.env.example"),
        ("ingest component", "hookrelay-ingest-keys", "hookrelay-ingest-config",
         "ingest/ingest-keys.env.example"),
    ],
    ids=["daemon", "ingest"],
)  # fmt: skip
def test_the_overlay_replaces_the_shipped_keys_and_config(
    renderings: dict[str, list[KubeObject]],
    shipped: str,
    secret: str,
    config_map: str,
    example: str,
) -> None:
    base, overlay = renderings[shipped], renderings["example overlay"]
    for kind, name in (("Secret", secret), ("ConfigMap", config_map)):
        assert find(base, kind, name)["data"] != find(overlay, kind, name)["data"]
    names = env_file_values(KUBERNETES_DIR / "overlays" / "example" / example)
    assert sorted(find(overlay, "Secret", secret)["data"]) == sorted(names)


@pytest.mark.parametrize(
    "example",
    sorted((KUBERNETES_DIR / "overlays").rglob("*.env.example")),
    ids=lambda path: path.name,
)
def test_git_ignores_the_real_secrets_an_overlay_is_given(example: Path) -> None:
    """The file each .example is copied to is git-ignored, and the tests' copies of the tree
    leave it behind."""
    real = example.with_suffix("")
    assert real.name in OVERLAY_SECRET_FILES
    result = subprocess.run(
        ["git", "check-ignore", "--quiet", str(real.relative_to(REPO_ROOT))],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"{real.relative_to(REPO_ROOT)} is not git-ignored"


def test_kustomizectl_names_a_missing_go(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(KUSTOMIZECTL), "fetch"],
        env={"PATH": str(tmp_path), "HOOKRELAY_KUSTOMIZE_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 4, result.stderr
    assert "Go is required" in result.stderr
    assert not list((tmp_path / "cache").rglob("kustomize"))
