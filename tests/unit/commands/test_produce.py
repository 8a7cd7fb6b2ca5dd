"""``hookrelay produce --validate``: what it says when the optional jsonschema library is missing
(the rest runs against the real broker in tests/integration/test_cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hookrelay.commands.cli import main


def test_validate_without_the_extra_names_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hookrelay.yaml").write_text("kafka:\n  bootstrap_servers: ['127.0.0.1:9']\n")
    events = tmp_path / "events.jsonl"
    events.write_text('{"event":"User.Created","createdAt":"2026-01-01T00:00:00Z"}\n')
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # as if not installed
    code = main(["produce", "-c", str(tmp_path / "hookrelay.yaml"), str(events), "--validate"])
    assert code == 1
    assert capsys.readouterr().err == (
        "hookrelay: --validate needs the jsonschema library: pip install 'hookrelay[validate]'\n"
    )
