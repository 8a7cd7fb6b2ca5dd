"""Dockerfile and .dockerignore, checked without a Docker engine.

* The Dockerfile is read by dockerfile-parse (the parser OpenShift's and Fedora's image build
  tools use, which resolves ARGs in FROM): multi-stage, base pinned by tag and digest, a
  numeric non-root USER equal to the runAsUser/runAsGroup of the daemon's and hookrelay
  ingest's Deployments, STOPSIGNAL, EXPOSE and command equal to what deploy/kubernetes runs,
  no secret in an ARG or ENV.
* The build context is computed with docker-py's own .dockerignore matcher: only the files
  the build needs, never a key, a config or a test.
* The build stage's command is run on a copy of exactly that context (`pip wheel --no-deps`),
  and the runtime stage's install is repeated in a throwaway virtualenv: the wheel with the
  `fast` extra, then the console script must start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser
from ruamel.yaml import YAML

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
DEPLOYMENT = REPO_ROOT / "deploy" / "kubernetes" / "base" / "deployment.yaml"
INGEST_DEPLOYMENT = (
    REPO_ROOT / "deploy" / "kubernetes" / "components" / "ingest" / "deployment.yaml"
)

# name:exact-tag@sha256:digest, the tag naming a Python patch release on Debian bookworm.
PINNED_BASE = re.compile(
    r"python:(?P<tag>3\.11\.\d+-slim-bookworm)@sha256:(?P<digest>[0-9a-f]{64})"
)
# Names that say "secret": such a value in an ARG or ENV ends up in the image's history.
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
# What the build may see: the package, its metadata, and the two files Docker always sends.
CONTEXT_ALLOWED = re.compile(r"(pyproject\.toml|README\.md|Dockerfile|\.dockerignore|daemon/.*)")

Instruction = dict[str, Any]


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


@pytest.fixture(scope="module")
def stages(dockerfile: DockerfileParser) -> dict[str, list[Instruction]]:
    """Instructions of each stage by stage name (``FROM ... AS name``), in order."""
    found: dict[str, list[Instruction]] = {}
    current: list[Instruction] | None = None
    for instruction in dockerfile.structure:
        if instruction["instruction"] == "FROM":
            name = instruction["value"].split()[-1]
            current = found.setdefault(name, [])
        if current is not None:
            current.append(instruction)
    return found


def pod_spec(path: Path) -> dict[str, Any]:
    """The pod template's spec of the Deployment in ``path``."""
    deployment = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    """The pod template's spec of deploy/kubernetes/base/deployment.yaml."""
    return pod_spec(DEPLOYMENT)


@pytest.fixture(scope="module", params=[DEPLOYMENT, INGEST_DEPLOYMENT], ids=["daemon", "ingest"])
def any_pod(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The daemon's pod template spec, then hookrelay ingest's (the same image runs both)."""
    return pod_spec(request.param)


def values(stage: list[Instruction], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def build_context() -> list[str]:
    """The files `docker build .` sends, by docker-py's implementation of .dockerignore."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    included = exclude_paths(str(REPO_ROOT), patterns, dockerfile="Dockerfile")
    return sorted(path for path in included if (REPO_ROOT / path).is_file())


def test_the_image_is_built_in_stages_from_one_pinned_base(
    dockerfile: DockerfileParser, stages: dict[str, list[Instruction]]
) -> None:
    assert dockerfile.is_multistage
    assert list(stages) == ["build", "runtime"]
    bases = dockerfile.parent_images
    assert len(bases) == 2 and len(set(bases)) == 1, bases
    assert PINNED_BASE.fullmatch(bases[0]), f"{bases[0]} is not pinned by patch tag and digest"
    # The runtime stage takes nothing from the build stage but the wheel folder.
    runtime_runs = " ".join(values(stages["runtime"], "RUN"))
    assert "--mount=type=bind,from=build,source=/dist,target=/dist" in runtime_runs
    assert not any("--from" in copy for copy in values(stages["runtime"], "COPY"))


def test_the_container_runs_as_the_deployments_non_root_user(
    stages: dict[str, list[Instruction]], any_pod: dict[str, Any]
) -> None:
    runtime = stages["runtime"]
    users = values(runtime, "USER")
    assert users, "the runtime stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and gid.isdigit(), "a numeric USER lets Kubernetes verify runAsNonRoot"
    assert int(uid) > 0 and int(gid) > 0
    context = any_pod["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
    # The account exists in the image with the same ids (for tools that look names up).
    accounts = " ".join(values(runtime, "RUN"))
    assert f"groupadd --system --gid {gid} hookrelay" in accounts
    assert f"useradd --system --uid {uid} --gid hookrelay" in accounts
    # Nothing runs as root after the switch.
    after = runtime[[i["instruction"] for i in runtime].index("USER") :]
    assert not [i for i in after if i["instruction"] == "RUN"]


def test_signal_port_and_command_are_what_the_deployment_expects(
    stages: dict[str, list[Instruction]], pod: dict[str, Any]
) -> None:
    runtime = stages["runtime"]
    (container,) = pod["containers"]
    assert values(runtime, "STOPSIGNAL") == ["SIGTERM"]
    assert values(runtime, "EXPOSE") == [str(container["ports"][0]["containerPort"])]
    # Exec form (JSON arrays), so SIGTERM reaches hookrelay itself, not a shell.
    (entrypoint,) = values(runtime, "ENTRYPOINT")
    (command,) = values(runtime, "CMD")
    assert json.loads(entrypoint) == ["hookrelay"]
    command_args = json.loads(command)
    assert command_args == container["args"], "the image alone runs what the pod runs"
    config_mounts = {m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config"}
    assert str(PurePosixPath(command_args[2]).parent) in config_mounts


def test_no_secret_goes_into_the_image(
    dockerfile: DockerfileParser, stages: dict[str, list[Instruction]]
) -> None:
    for stage in stages.values():
        for instruction in stage:
            if instruction["instruction"] in ("ARG", "ENV"):
                for line in instruction["value"].split():
                    name = line.split("=", 1)[0]
                    assert not SECRET_NAME.search(name), f"{instruction['instruction']} {name}"
    context = build_context()
    outside = [path for path in context if not CONTEXT_ALLOWED.fullmatch(path)]
    assert outside == [], "files outside the allow-list reach the build context"
    assert not [p for p in context if p.endswith((".key", ".env", ".pem", ".pyc"))]
    # Every COPY source is in the context (a miss would fail `docker build`).
    for copy in values(stages["build"], "COPY"):
        *sources, _target = copy.split()
        for source in sources:
            assert any(p == source.rstrip("/") or p.startswith(source) for p in context), source


@pytest.mark.timeout(600)
def test_the_wheel_builds_from_the_context_and_installs_with_uvloop(
    stages: dict[str, list[Instruction]], tmp_path: Path
) -> None:
    """What `docker build` does, minus Docker: the build stage's pip wheel on a copy of the
    build context, then the runtime stage's install into a fresh virtualenv."""
    (wheel_command,) = values(stages["build"], "RUN")
    assert wheel_command == "python -m pip wheel --no-deps --wheel-dir /dist ."
    context = tmp_path / "context"
    for path in build_context():
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / path, context / path)
    dist = tmp_path / "dist"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), "."],
        cwd=context, env=env)  # fmt: skip
    (wheel,) = dist.glob("hookrelay-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert "hookrelay/commands/cli.py" in names and "hookrelay/py.typed" in names
    assert "hookrelay/ops/admin/admin_openapi.yaml" in names
    assert all(n.startswith(("hookrelay/", "hookrelay-")) for n in names), names
    assert b"Provides-Extra: fast" in metadata and b"Provides-Extra: tracing" in metadata

    venv = tmp_path / "opt-hookrelay"
    run([sys.executable, "-m", "venv", str(venv)], env=env)
    run([str(venv / "bin" / "pip"), "install", f"{wheel}[fast,tracing]"], env=env)
    help_text = run([str(venv / "bin" / "hookrelay"), "--help"], env=env)
    assert "run" in help_text and "check" in help_text
    run([str(venv / "bin" / "python"), "-c", "import uvloop, hookrelay.app, hookrelay.ops.otel"],
        env=env)  # fmt: skip
    # pip compiled the bytecode at install time: a read-only root filesystem needs no writes.
    assert list(venv.glob("lib/python3.*/site-packages/hookrelay/commands/__pycache__/cli.*.pyc"))


def run(command: list[str], **kwargs: Any) -> str:
    """Run ``command`` to completion; its stdout, or a failure showing its output."""
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=500, check=False, **kwargs
    )
    assert result.returncode == 0, f"{command[:3]} exited {result.returncode}:\n{result.stderr}"
    return result.stdout
