"""A worker process's side: the role the supervisor's environment gives it, and the settings
it runs with."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hookrelay.app import WorkerRole
from hookrelay.app.worker import remove_orphans
from hookrelay.commands import cli
from hookrelay.commands.cli import EXIT_FAILED
from hookrelay.config import AdminSettings, Hook, KafkaSettings, RateLimit, Settings


def test_the_environment_marks_a_worker_its_index_and_the_count() -> None:
    assert WorkerRole.from_environment({}) is None
    role = WorkerRole.from_environment(
        {
            "HOOKRELAY_WORKER": "1/3",
            "HOOKRELAY_WORKER_TOKEN": "t",
            "HOOKRELAY_WORKER_REPORT_FD": "7",
            "HOOKRELAY_WORKER_SETTINGS": "/tmp/hookrelay-settings-x/settings.pickle",
        }
    )
    assert role == WorkerRole(1, 3, "t", 7, "/tmp/hookrelay-settings-x/settings.pickle")
    with pytest.raises(ValueError, match="index < count"):
        WorkerRole.from_environment({"HOOKRELAY_WORKER": "3/3"})


def test_a_worker_started_by_hand_without_the_supervisors_snapshot_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker reads no files: without the snapshot it would have nothing to run.
    with pytest.raises(ValueError, match="started by their supervisor"):
        WorkerRole.from_environment({"HOOKRELAY_WORKER": "0/2"})
    config = tmp_path / "hookrelay.yaml"
    config.write_text("kafka: {topics: [t]}\nhooks: []\n")
    monkeypatch.setenv("HOOKRELAY_WORKER", "0/2")
    assert cli.main(["run", "-c", str(config)]) == EXIT_FAILED
    assert "HOOKRELAY_WORKER_SETTINGS is not" in capsys.readouterr().err
    # Trials: "1", "abc" and "-1/2" gave int()'s message; a missing or foreign snapshot file
    # a traceback (FileNotFoundError, UnpicklingError).
    for mark in ("1", "abc", "-1/2", "1/x", "2/2"):
        with pytest.raises(ValueError, match="expected <index>/<count>"):
            WorkerRole.from_environment({"HOOKRELAY_WORKER": mark})
    monkeypatch.setenv("HOOKRELAY_WORKER", "abc")
    assert cli.main(["run", "-c", str(config)]) == EXIT_FAILED
    assert "expected <index>/<count>" in capsys.readouterr().err
    monkeypatch.setenv("HOOKRELAY_WORKER", "0/2")
    for snapshot in (tmp_path / "missing.pickle", config):
        monkeypatch.setenv("HOOKRELAY_WORKER_SETTINGS", str(snapshot))
        assert cli.main(["run", "-c", str(config)]) == EXIT_FAILED
        err = capsys.readouterr().err
        assert err.startswith("hookrelay: HOOKRELAY_WORKER_SETTINGS=") and "Traceback" not in err


def test_a_worker_runs_its_share_a_private_listener_and_a_member_name_of_its_own() -> None:
    hook = Hook(
        id="a", events=("*",), url="https://a.example/h", rate_limit=RateLimit(per_second=9)
    )
    settings = Settings(
        hooks=(hook,), workers=3,
        kafka=KafkaSettings(group_instance_id="host-1"),
        admin=AdminSettings(listen="0.0.0.0:9464", token="operator-token-0123456789abcdef"),
    )  # fmt: skip
    mine = WorkerRole(2, 3, "private-token", None, "unused").settings(settings)
    assert mine.hooks[0].rate_limit == RateLimit(per_second=3, burst=3)
    assert mine.admin.listen == "127.0.0.1:0"
    assert mine.admin.token is not None
    assert mine.admin.token.get_secret_value() == "private-token"
    assert mine.kafka.group_instance_id == "host-1-w2"
    assert settings.kafka.group_instance_id == "host-1"  # the running settings are untouched


def test_a_worker_forgets_only_the_supervisors_own_snapshot_files(tmp_path: Path) -> None:
    directory = tmp_path / "hookrelay-settings-abc"
    directory.mkdir()
    (directory / "settings.pickle").write_bytes(b"keys")
    (directory / "settings.pickle.new").write_bytes(b"keys")
    WorkerRole(0, 2, "t", None, str(directory / "settings.pickle")).forget_snapshot()
    assert not directory.exists()

    # Whatever else the environment names is left alone.
    elsewhere = tmp_path / "etc" / "settings.pickle"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"not ours")
    other = tmp_path / "hookrelay-settings-x" / "hookrelay.yaml"
    other.parent.mkdir()
    other.write_bytes(b"not ours")
    for path in (elsewhere, other):
        WorkerRole(0, 2, "t", None, str(path)).forget_snapshot()
        assert path.read_bytes() == b"not ours"


def test_a_starting_supervisor_removes_the_snapshots_of_supervisors_that_are_gone(
    tmp_path: Path,
) -> None:
    # A trial killed supervisor and workers together (as an OOM kill does) four times: each
    # left a snapshot, signing keys and admin token in clear, and nothing ever removed it.
    dead_pid = subprocess.Popen(["true"])  # a pid that ran and exited
    dead_pid.wait()
    orphan = tmp_path / f"hookrelay-settings-{dead_pid.pid}-abc"
    alive = tmp_path / f"hookrelay-settings-{os.getpid()}-def"
    legacy = tmp_path / "hookrelay-settings-k2j4h5"  # an older version's: no pid in it
    crowded = tmp_path / f"hookrelay-settings-{dead_pid.pid}-ghi"
    for directory in (orphan, alive, legacy, crowded):
        directory.mkdir()
        (directory / "settings.pickle").write_bytes(b"keys")
    (crowded / "notes.txt").write_bytes(b"not ours")
    assert remove_orphans(tmp_path) == [orphan]
    assert not orphan.exists()
    assert (alive / "settings.pickle").exists() and (legacy / "settings.pickle").exists()
    assert (crowded / "notes.txt").exists()
