"""Section tracing: defaults, values refused at load time, and ``enabled: true`` refused
(by ``load_settings``, so by ``hookrelay check`` and ``hookrelay run`` alike) when the
tracing extra is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookrelay.commands.cli import _SKIPPED, main
from hookrelay.config import TracingSettings, load_settings
from hookrelay.config import tracing as tracing_config
from tests.unit.config.test_config import main_file, refusals


@pytest.fixture
def extra_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if ``pip install 'hookrelay[tracing]'`` had not been run."""
    monkeypatch.setattr(
        tracing_config, "TRACING_MODULES", ("opentelemetry.sdk.trace", "otel_not_installed.x")
    )


def test_tracing_is_off_by_default_and_leaves_the_rest_to_the_environment(
    tmp_path: Path,
) -> None:
    settings = load_settings(main_file(tmp_path, "logging: {level: info}\n"), env={})

    assert settings.tracing == TracingSettings()
    assert settings.tracing.enabled is False
    assert (settings.tracing.endpoint, settings.tracing.service_name) == (None, None)
    assert (settings.tracing.sample_ratio, settings.tracing.timeout_s) == (1.0, None)


def test_a_full_tracing_section_loads(tmp_path: Path) -> None:
    path = main_file(
        tmp_path,
        """
        tracing:
          enabled: true
          endpoint: https://otel.example.com:4318/v1/traces
          headers: {x-honeycomb-team: "${KEY}"}
          service_name: hookrelay-eu
          sample_ratio: 0.25
          timeout_s: 3
        """,
    )

    tracing = load_settings(path, env={"KEY": "team-key-123"}).tracing

    assert tracing.enabled is True
    assert tracing.endpoint == "https://otel.example.com:4318/v1/traces"
    assert tracing.headers == (("x-honeycomb-team", "team-key-123"),)
    assert (tracing.service_name, tracing.sample_ratio, tracing.timeout_s) == (
        "hookrelay-eu",
        0.25,
        3.0,
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("sample_ratio: 1.5", "tracing.sample_ratio: expected a number <= 1"),
        ("endpoint: otel:4318", "tracing.endpoint: expected an http:// or https:// URL"),
        (
            "endpoint: http://user:pw@otel:4318/v1/traces",
            "tracing.endpoint: credentials in the URL are refused",
        ),
        ("headers: {traceparent: x}", "tracing.headers.traceparent: this header is set by"),
        ("enabled: yes", "tracing.enabled: expected true or false"),
    ],
)
def test_tracing_values_are_checked_at_load_time(tmp_path: Path, line: str, message: str) -> None:
    path = main_file(tmp_path, f"tracing:\n  {line}\n")

    [refusal] = refusals(path)

    assert refusal.startswith(f"{path}:2: {message}"), refusal


@pytest.mark.usefixtures("extra_missing")
def test_enabling_tracing_without_the_extra_is_refused_with_the_install_command(
    tmp_path: Path,
) -> None:
    path = main_file(tmp_path, "admin: {listen: 127.0.0.1:0}\ntracing:\n  enabled: true\n")

    assert refusals(path) == [
        f"{path}:3: tracing.enabled: expected the tracing extra with enabled: true; install it "
        "with pip install 'hookrelay[tracing]' (otel_not_installed.x not found), or set "
        "enabled: false"
    ]


@pytest.mark.usefixtures("extra_missing")
def test_tracing_off_needs_no_extra(tmp_path: Path) -> None:
    path = main_file(tmp_path, "tracing:\n  enabled: false\n  sample_ratio: 0.5\n")

    assert load_settings(path, env={}).tracing.sample_ratio == 0.5


@pytest.mark.usefixtures("extra_missing")
@pytest.mark.parametrize("command", ["check", "run"])
def test_check_and_run_refuse_tracing_without_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = main_file(tmp_path, "tracing:\n  enabled: true\n")

    assert main([command, "-c", str(path)]) == 1

    err = capsys.readouterr().err
    assert f"{path}:2: tracing.enabled:" in err
    assert "pip install 'hookrelay[tracing]'" in err


@pytest.mark.usefixtures("extra_missing")
def test_commands_that_never_trace_skip_the_section_and_need_no_extra(tmp_path: Path) -> None:
    """``ingest``, ``produce``, ``replay``, ``send-test`` and ``match`` load the shared file
    without it: an ingest host needs neither the extra nor the collector's key."""
    path = main_file(tmp_path, "tracing:\n  enabled: true\n  headers: {x-api-key: '${OTLP_KEY}'}\n")

    settings = load_settings(path, env={}, skip=("tracing",))

    assert settings.tracing == TracingSettings()
    assert all("tracing" in _SKIPPED[c] for c in ("ingest", "produce", "replay", "match"))
    assert "tracing" not in _SKIPPED["run"]
