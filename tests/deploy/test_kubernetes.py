"""deploy/kubernetes: every rendering is valid for Kubernetes and for hookrelay.

Each kustomization is rendered by the real kustomize (deploy/kubernetes/kustomizectl.py) and
every object is validated strictly: core kinds with kubernetes-validate, ServiceMonitor and
ScaledObject with the models generated from their CRDs (tests/deploy/k8s_tools.py). The
ConfigMap is then mounted as the kubelet would and checked by the real `hookrelay check`,
with exactly the environment the Deployment gives the container (the Secret's keys and the
downward API), and the settings it yields are held against the Deployment: shutdown
deadlines inside terminationGracePeriodSeconds, the admin listener on the probed port, KEDA
pointing at the same Kafka group and topic.
"""

from __future__ import annotations

import copy
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

from hookrelay.config import Settings, config_warnings, load_settings
from hookrelay.ops.metrics import Metrics
from tests.deploy.k8s_tools import (
    KUSTOMIZECTL,
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
EXPECTED_KINDS = {
    "base": BASE_KINDS,
    "example overlay": sorted([*BASE_KINDS, "Namespace", "ScaledObject", "ServiceMonitor"]),
    "prometheus trigger": sorted([*BASE_KINDS, "ScaledObject", "ServiceMonitor"]),
}
RENDERINGS = list(EXPECTED_KINDS)
WITH_CONFIG = ["base", "example overlay"]
WITH_KEDA = ["example overlay", "prometheus trigger"]

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


@pytest.fixture(scope="module")
def kube_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes as a user would prepare it: the example overlay's
    signing-keys.env made from its .example, plus a kustomization using every component."""
    root = copy_kubernetes_tree(tmp_path_factory.mktemp("k8s") / "kubernetes")
    overlay = root / "overlays" / "example"
    shutil.copy(overlay / "signing-keys.env.example", overlay / "signing-keys.env")
    variant = root / "variants" / "prometheus-trigger"
    variant.mkdir(parents=True)
    (variant / "kustomization.yaml").write_text(PROMETHEUS_VARIANT, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def renderings(kube_tree: Path) -> dict[str, list[KubeObject]]:
    """Every kustomization rendered once by the pinned kustomize."""
    folders = {
        "base": kube_tree / "base",
        "example overlay": kube_tree / "overlays" / "example",
        "prometheus trigger": kube_tree / "variants" / "prometheus-trigger",
    }
    return {name: kustomize_build(folder) for name, folder in folders.items()}


@pytest.fixture(params=RENDERINGS)
def rendered(
    request: pytest.FixtureRequest, renderings: dict[str, list[KubeObject]]
) -> tuple[str, list[KubeObject]]:
    """(name, objects) of each rendering in turn."""
    return request.param, renderings[request.param]


def mount(objects: list[KubeObject], root: Path) -> tuple[Path, dict[str, str]]:
    """Lay the Deployment's ConfigMap volumes out under ``root`` as the kubelet mounts them;
    returns (the config file its ``run -c`` names, under root; the container's environment)."""
    deployment = find(objects, "Deployment", "hookrelay")
    inside = mount_config_maps(deployment, objects, root)
    args = only_container(deployment)["args"]
    assert args[:2] == ["run", "-c"], args
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

    expected = {
        "livenesProbe": deployment,
        "port": service,
        "endpoint": monitor,
        "max_replica_count": scaled,
        "scaleTargetRef": unscaled,
        "no schema": unknown,
    }
    for mistake, obj in expected.items():
        problems = schema_problems(obj)
        assert problems, f"{obj['kind']} with {mistake!r} was accepted"
        assert all(mistake in line for line in problems), problems
    for obj in objects:
        assert schema_problems(obj) == []


# ── The configuration in the ConfigMap ───────────────────────────────────────────────────────────


def test_the_config_map_passes_hookrelay_check(configured: Configured) -> None:
    """`hookrelay check` on the mounted files, with only the container's environment."""
    config_file, env = configured.config_file, configured.env
    result = subprocess.run(
        [sys.executable, "-m", "hookrelay", "check", "-c", str(config_file)],
        env={**env, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("enabled)"), result.stdout
    # The example secrets are placeholders, and check says so for each of them: nothing else.
    warnings = config_warnings(configured.settings)
    assert warnings, "the example's placeholder secrets must be flagged"
    assert all(w.endswith("still the placeholder from an example file; set a real secret")
               for w in warnings), warnings  # fmt: skip
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


def test_the_pod_meets_the_restricted_pod_security_standard(
    rendered: tuple[str, list[KubeObject]],
) -> None:
    objects = rendered[1]
    deployment = find(objects, "Deployment", "hookrelay")
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
    namespaces = [obj for obj in objects if obj["kind"] == "Namespace"]
    for namespace in namespaces:
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_disruption_budget_covers_the_pods(rendered: tuple[str, list[KubeObject]]) -> None:
    objects = rendered[1]
    deployment = find(objects, "Deployment", "hookrelay")
    budget = find(objects, "PodDisruptionBudget", "hookrelay")["spec"]
    assert budget["selector"] == deployment["spec"]["selector"]
    assert budget["maxUnavailable"] == 1
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    replicas = deployment["spec"].get("replicas")
    if replicas is None:  # KEDA owns the count
        replicas = find(objects, "ScaledObject", "hookrelay")["spec"]["minReplicaCount"]
    assert replicas >= 2, "one replica left during a drain needs at least two"


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

# Run inside the namespace: GET one URL, print "<status> <body>" (503 is an answer, not an error).
HTTP_GET = """
import sys, urllib.error, urllib.request
try:
    answer = urllib.request.urlopen(sys.argv[1], timeout=3)
    status, body = answer.status, answer.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
print(status, body.decode())
"""


def get_in_namespace_of(pid: int, port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path from inside process ``pid``'s network namespace;
    returns (status, body), or (0, the error) when nothing answered."""
    namespace = f"--net=/proc/{pid}/ns/net"
    url = f"http://127.0.0.1:{port}{path}"
    probe = subprocess.run(
        ["nsenter", namespace, sys.executable, "-c", HTTP_GET, url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    status, _, body = probe.stdout.partition(" ")
    return (int(status), body) if status.isdigit() else (0, probe.stderr)


def test_the_pod_starts_answers_its_probes_and_stops_in_time(configured: Configured) -> None:
    """hookrelay run with the mounted ConfigMap and only the pod's environment, in a network
    namespace of its own as a pod has: the probes and the scrape get their answers on the
    container port (not ready, since the cluster's Kafka is not here), and SIGTERM ends it
    with status 0 before hard_deadline_s, hence well inside terminationGracePeriodSeconds."""
    config_file, settings = configured.config_file, configured.settings
    container = only_container(find(configured.objects, "Deployment", "hookrelay"))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe")}
    readiness = container["readinessProbe"]["httpGet"]
    run = [sys.executable, "-m", "hookrelay", *container["args"][:2], str(config_file)]
    # A new network namespace, whose loopback the shell brings up before exec'ing hookrelay.
    daemon = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *run],
        env={**configured.env, "PATH": os.environ["PATH"]},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        startup = container["startupProbe"]
        budget_s = startup["periodSeconds"] * startup["failureThreshold"]
        started = time.monotonic()
        while get_in_namespace_of(daemon.pid, ports["admin"], "/healthz")[0] != 200:
            # unshare needs root (CAP_SYS_ADMIN), as CI has; its refusal shows here.
            assert daemon.poll() is None, f"exited during start-up: {daemon.communicate()[0]}"
            assert time.monotonic() - started < budget_s, "the startupProbe would give up"
            time.sleep(0.2)
        for kind, http in probes.items():
            answer = get_in_namespace_of(daemon.pid, ports[http["port"]], http["path"])
            assert answer[0] == 200, (kind, answer)
        status, body = get_in_namespace_of(daemon.pid, ports[readiness["port"]], readiness["path"])
        assert status == 503 and "kafka unreachable" in body, body
        status, body = get_in_namespace_of(daemon.pid, ports["admin"], "/metrics")
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


# ── Failure modes a user meets ───────────────────────────────────────────────────────────────────


def test_the_overlay_refuses_to_render_without_its_signing_keys(tmp_path: Path) -> None:
    """No signing-keys.env, no rendering: the placeholder keys of the base never leak into a
    real deployment."""
    root = copy_kubernetes_tree(tmp_path / "kubernetes")
    with pytest.raises(ManifestError, match=r"signing-keys\.env"):
        kustomize_build(root / "overlays" / "example")


def test_the_overlay_replaces_the_base_keys_and_config(
    renderings: dict[str, list[KubeObject]],
) -> None:
    base, overlay = renderings["base"], renderings["example overlay"]
    for kind, name in (("Secret", "hookrelay-signing-keys"), ("ConfigMap", "hookrelay-config")):
        assert find(base, kind, name)["data"] != find(overlay, kind, name)["data"]
    example = Path(__file__).resolve().parents[2] / "deploy/kubernetes/overlays/example"
    names = [
        line.split("=", 1)[0]
        for line in (example / "signing-keys.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert sorted(find(overlay, "Secret", "hookrelay-signing-keys")["data"]) == sorted(names)


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
