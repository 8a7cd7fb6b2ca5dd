"""The secrets of deploy/'s example files (``NAME=value`` lines), as ``hookrelay check`` sees
them: every one must be a placeholder that check flags, so that a deployment copied from an
example without filling it in is warned about rather than silently running on it."""

from __future__ import annotations

from pathlib import Path

from hookrelay.config import config_warnings, load_settings

PLACEHOLDER_WARNING = "still the placeholder from an example file; set a real secret"
"""The end of check's warning for a secret left as an example file wrote it."""

# A hook's signing key is a secret check inspects for placeholders; the value under test is
# given as ${SECRET}, as the real files are read.
_PROBE_CONFIG = """\
kafka: {bootstrap_servers: "127.0.0.1:9092", topics: [identity.events]}
hooks:
  - id: probe
    events: ["*"]
    url: https://receiver.example.com/hooks
    signing_key: ${SECRET}
"""


def env_file_values(path: Path) -> dict[str, str]:
    """NAME → value of every ``NAME=value`` line (comments and blank lines skipped)."""
    pairs = (
        line.split("=", 1)
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def flagged_as_placeholder(value: str, folder: Path) -> bool:
    """Whether ``hookrelay check`` calls ``value`` a placeholder where it looks for them (a
    hook's signing key); ``folder`` receives the probe's configuration file."""
    config = folder / "placeholder-probe.yaml"
    config.write_text(_PROBE_CONFIG, encoding="utf-8")
    settings = load_settings(config, env={"SECRET": value})
    return any(warning.endswith(PLACEHOLDER_WARNING) for warning in config_warnings(settings))
