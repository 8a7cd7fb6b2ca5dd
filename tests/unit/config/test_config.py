"""hookrelay.config: YAML files → frozen Settings, and refusals that name file, line and key."""

from __future__ import annotations

import json
import re
import secrets
import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

import pydantic
import pytest

from hookrelay import __version__
from hookrelay.config import (
    AdminSettings,
    DeliverySettings,
    Hook,
    HttpSettings,
    RateLimit,
    Settings,
    ShutdownSettings,
    Skippable,
    config_warnings,
    json_schemas,
    load_settings,
)
from hookrelay.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO / "config"
DEMO_DIR = REPO / "deploy" / "demo"
DEMO_KEYS = DEMO_DIR / "keys"

HOOK = """
    - id: crm-sync
      events: [User.Created]
      url: https://crm.example.com/hooks/logto
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def main_file(tmp_path: Path, text: str) -> Path:
    return write(tmp_path, "hookrelay.yaml", text)


def with_hooks(tmp_path: Path, hooks_text: str) -> Path:
    """A main file naming hooks.yaml, and that hooks file with ``hooks_text`` below ``hooks:``."""
    write(tmp_path, "hooks.yaml", "hooks:\n" + textwrap.dedent(hooks_text).lstrip("\n"))
    return main_file(tmp_path, "hooks_file: hooks.yaml\n")


def refusals(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=env or {})
    return [str(issue) for issue in caught.value.issues]


# ── The shipped files ───────────────────────────────────────────────────────────────────────────


def reference_env() -> dict[str, str]:
    """The systemd env example's variables: every ``${VAR}`` the reference files name."""
    example = REPO / "deploy" / "systemd" / "hookrelay.env.example"
    lines = example.read_text(encoding="utf-8").splitlines()
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {name: value for name, value in pairs}


def test_reference_config_shows_defaults_and_posts_to_example_endpoints() -> None:
    settings = load_settings(CONFIG_DIR / "hookrelay.yaml", env=reference_env())

    assert settings.kafka.bootstrap_servers == ("127.0.0.1:9092",)
    assert settings.kafka.topics == ("identity.events",)
    assert settings.admin.listen == "127.0.0.1:9464"
    assert settings.hooks_file == str(CONFIG_DIR / "hooks.yaml")
    assert settings.source_file == str(CONFIG_DIR / "hookrelay.yaml")
    assert [hook.id for hook in settings.hooks] == [
        "crm-sync",
        "audit-log",
        "org-sync",
        "security-alerts",
        "analytics",
        "legacy-erp",
    ]
    assert all(urlsplit(hook.url).hostname.endswith(".example.com") for hook in settings.hooks)  # type: ignore[union-attr]
    assert all(urlsplit(hook.url).scheme == "https" for hook in settings.hooks)


def test_reference_config_never_weakens_the_ssrf_guard() -> None:
    """The trials found ``allow_networks: [127.0.0.0/8]`` in the file the systemd README copies to
    /etc/hookrelay; loopback is allowed only in the demo's own configuration."""
    settings = load_settings(CONFIG_DIR / "hookrelay.yaml", env=reference_env())

    assert settings.http == HttpSettings()
    assert all(hook.allow_networks == () for hook in settings.hooks)
    demo = load_settings(DEMO_DIR / "hookrelay.yaml", env={})
    assert [str(network) for network in demo.http.allow_networks] == ["127.0.0.0/8"]


def test_reference_hooks_take_every_secret_from_the_environment() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(CONFIG_DIR / "hookrelay.yaml", env={})
    unset = " ".join(str(issue) for issue in caught.value.issues)
    for name in reference_env():
        if name != "HOOKRELAY_ADMIN_TOKEN":
            assert f"variable {name} is not set" in unset, name
    hooks = {hook.id: hook for hook in load_settings(
        CONFIG_DIR / "hookrelay.yaml", env=reference_env()).hooks}  # fmt: skip
    assert hooks["crm-sync"].signing_key is not None
    assert (
        hooks["crm-sync"].signing_key.get_secret_value() == reference_env()["CRM_SYNC_SIGNING_KEY"]
    )
    assert hooks["analytics"].signing_key is None


def test_shipped_hooks_cover_exact_wildcard_star_exception_disabled_and_unsigned() -> None:
    for hooks in (
        {h.id: h for h in load_settings(CONFIG_DIR / "hookrelay.yaml", env=reference_env()).hooks},
        {h.id: h for h in load_settings(DEMO_DIR / "hookrelay.yaml", env={}).hooks},
    ):
        assert hooks["crm-sync"].events == ("User.Created", "User.Data.Updated", "Organization.*")
        assert hooks["audit-log"].events == ("*",)
        assert hooks["org-sync"].events == ("Organization.*", "OrganizationRole.*")
        assert hooks["security-alerts"].rate_limit == RateLimit(per_second=5, burst=10)
        assert hooks["legacy-erp"].enabled is False
        assert hooks["analytics"].signing_key is None


def test_demo_hooks_mirror_the_reference_hooks_but_post_to_the_demo_receiver() -> None:
    reference = load_settings(CONFIG_DIR / "hookrelay.yaml", env=reference_env()).hooks
    demo = load_settings(DEMO_DIR / "hookrelay.yaml", env={}).hooks

    def shape(hook: Hook) -> tuple[object, ...]:
        return (hook.id, hook.events, hook.enabled, hook.rate_limit, hook.max_concurrency,
                hook.timeout_s, hook.retry_on_status)  # fmt: skip

    assert [shape(hook) for hook in demo] == [shape(hook) for hook in reference]
    assert all(h.url == f"http://127.0.0.1:8787/hooks/{h.id}" for h in demo)


def test_demo_signing_keys_are_the_demo_key_files() -> None:
    settings = load_settings(DEMO_DIR / "hookrelay.yaml", env={})

    for hook in settings.hooks:
        key_file = DEMO_KEYS / f"{hook.id}.key"
        if hook.signing_key is None:
            assert not key_file.exists()
            continue
        key = key_file.read_text(encoding="utf-8").removesuffix("\n")
        assert hook.signing_key.get_secret_value() == key
        assert len(key) == 32


def test_shipped_configs_have_no_warnings_once_real_secrets_are_set() -> None:
    real = {name: secrets.token_hex(24) for name in reference_env()}
    assert config_warnings(load_settings(CONFIG_DIR / "hookrelay.yaml", env=real)) == []
    placeholders = config_warnings(
        load_settings(CONFIG_DIR / "hookrelay.yaml", env=reference_env())
    )
    # Five signing keys, and the analytics hook's bearer token (a new user found it unflagged).
    assert len(placeholders) == 6 and all("still the placeholder" in w for w in placeholders)
    assert "hooks[4].headers.Authorization: still the placeholder" in placeholders[4]
    assert config_warnings(load_settings(DEMO_DIR / "hookrelay.yaml", env={})) == []


def test_shipped_json_schemas_equal_the_generated_ones() -> None:
    hint = (
        "regenerate them: .venv/bin/python -c "
        "\"from hookrelay.config import write_json_schemas; write_json_schemas('config')\""
    )
    for name, schema in json_schemas().items():
        shipped = json.loads((CONFIG_DIR / name).read_text(encoding="utf-8"))
        assert shipped == schema, f"config/{name} is stale; {hint}"


def test_json_schemas_describe_the_file_shape_not_the_loaded_shape() -> None:
    schemas = json_schemas()
    main, hooks = schemas["hookrelay.schema.json"], schemas["hooks.schema.json"]
    hook = hooks["$defs"]["Hook"]

    assert "source_file" not in main["properties"]
    assert main["not"] == {"required": ["hooks", "hooks_file"]}
    assert hooks["required"] == ["hooks"]
    assert hooks["additionalProperties"] is False
    assert list(hook["properties"])[4:6] == ["signing_key", "signing_key_file"]
    assert hook["not"] == {"required": ["signing_key", "signing_key_file"]}
    assert hook["properties"]["headers"]["type"] == "object"
    assert hook["properties"]["headers"]["default"] == {}
    assert main["properties"]["kafka"]["default"]["topics"] == ["identity.events"]
    assert hook["properties"]["timeout_s"]["description"].startswith("Seconds per attempt")


# ── Defaults and partial files ──────────────────────────────────────────────────────────────────


def test_empty_main_file_gives_every_default(tmp_path: Path) -> None:
    settings = load_settings(main_file(tmp_path, ""), env={})

    assert settings.kafka.group_id == "hookrelay"
    assert settings.kafka.auto_offset_reset == "earliest"
    assert settings.dead_letter_topic == "hookrelay.dlq"
    assert settings.http.timeout_s == 10.0
    assert settings.http.user_agent == f"hookrelay/{__version__}"
    assert settings.delivery.retry_schedule_s == (5, 30, 120, 600, 3600, 18000, 36000)
    assert settings.delivery.retry_on_status == (408, 425, 429)
    assert settings.logging.level == "info"
    assert settings.shutdown.hard_deadline_s == 30.0
    assert settings.hooks == ()
    assert settings.hooks_file is None


def test_main_file_with_only_some_sections_defaults_the_rest(tmp_path: Path) -> None:
    path = main_file(
        tmp_path,
        """
        kafka:
          group_id: relay-eu
        logging:
          format: console
        """,
    )
    settings = load_settings(path, env={})

    assert settings.kafka.group_id == "relay-eu"
    assert settings.kafka.topics == ("identity.events",)
    assert settings.logging.format == "console"
    assert settings.logging.level == "info"
    assert settings.admin.port == 9464


def test_inline_hooks_are_loaded_from_the_main_file(tmp_path: Path) -> None:
    settings = load_settings(main_file(tmp_path, "hooks:" + HOOK), env={})

    assert [hook.id for hook in settings.hooks] == ["crm-sync"]
    assert settings.hooks_file is None


def test_hooks_file_is_relative_to_the_main_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", "subscriptions.yaml", "hooks:" + HOOK)
    main = main_file(tmp_path / "etc", "hooks_file: subscriptions.yaml\n")

    settings = load_settings(main, env={})

    assert settings.hooks[0].id == "crm-sync"
    assert settings.hooks_file == str(tmp_path / "etc" / "subscriptions.yaml")


# ── Values of each section ──────────────────────────────────────────────────────────────────────


def test_bootstrap_servers_accept_a_comma_separated_string(tmp_path: Path) -> None:
    path = main_file(tmp_path, 'kafka:\n  bootstrap_servers: "k1:9092, k2:9093,[::1]:9094"\n')

    servers = load_settings(path, env={}).kafka.bootstrap_servers

    assert servers == ("k1:9092", "k2:9093", "[::1]:9094")


def test_bootstrap_server_without_port_is_refused_with_line(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  bootstrap_servers:\n    - k1:9092\n    - k2\n")

    assert refusals(path) == [
        f"{path}:4: kafka.bootstrap_servers[1]: "
        "expected host:port of a Kafka broker, e.g. 127.0.0.1:9092"
    ]


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("127.0.0.1:9464", "127.0.0.1", 9464), ("[::1]:80", "::1", 80), ("0.0.0.0:0", "0.0.0.0", 0)],
)
def test_admin_listen_splits_into_host_and_port(listen: str, host: str, port: int) -> None:
    admin = AdminSettings(listen=listen)

    assert (admin.host, admin.port) == (host, port)


@pytest.mark.parametrize("listen", ["9464", "localhost", "::1:9464", "[::1]9464", "h:99999", "h:"])
def test_admin_listen_that_is_not_host_port_is_refused(tmp_path: Path, listen: str) -> None:
    path = main_file(tmp_path, f'admin:\n  listen: "{listen}"\n')

    assert refusals(path) == [
        f"{path}:2: admin.listen: expected host:port, e.g. 127.0.0.1:9464 or [::1]:9464"
    ]


def test_literal_choice_lists_what_was_expected(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  auto_offset_reset: latests\n")

    assert refusals(path) == [
        f"{path}:2: kafka.auto_offset_reset: expected one of: earliest, latest"
    ]


def test_retry_schedule_must_not_shrink(tmp_path: Path) -> None:
    path = main_file(tmp_path, "delivery:\n  retry_schedule_s: [5, 30, 10]\n")

    assert refusals(path) == [
        f"{path}:2: delivery.retry_schedule_s[2]: expected delays in non-decreasing order"
    ]


def test_retry_schedule_must_not_be_empty_or_hold_zero(tmp_path: Path) -> None:
    empty = main_file(tmp_path, "delivery:\n  retry_schedule_s: []\n")
    assert refusals(empty) == [f"{empty}:2: delivery.retry_schedule_s: expected a non-empty list"]

    zero = main_file(tmp_path, "delivery:\n  retry_schedule_s:\n    - 0\n")
    assert refusals(zero) == [f"{zero}:3: delivery.retry_schedule_s[0]: expected a number >= 0.01"]


def test_resume_below_defaults_to_80_percent_of_max_in_flight() -> None:
    assert DeliverySettings().resume_below == 8000
    assert DeliverySettings(max_in_flight=1).resume_below == 1
    assert DeliverySettings(max_in_flight=100, resume_in_flight=10).resume_below == 10


def test_resume_in_flight_must_stay_below_max_in_flight(tmp_path: Path) -> None:
    path = main_file(tmp_path, "delivery:\n  max_in_flight: 100\n  resume_in_flight: 100\n")

    assert refusals(path) == [
        f"{path}:3: delivery.resume_in_flight: expected a number below max_in_flight"
    ]


def test_circuit_min_attempts_may_not_exceed_the_window(tmp_path: Path) -> None:
    path = main_file(tmp_path, "delivery:\n  circuit_window: 10\n  circuit_min_attempts: 11\n")

    assert refusals(path) == [
        f"{path}:3: delivery.circuit_min_attempts: expected at most circuit_window: the "
        "circuit could never open"
    ]


@pytest.mark.parametrize("rate", ["0", "1.5", "-0.5"])
def test_circuit_failure_rate_is_a_share_above_0_and_at_most_1(tmp_path: Path, rate: str) -> None:
    path = main_file(tmp_path, f"delivery:\n  circuit_failure_rate: {rate}\n")

    [refusal] = refusals(path)
    assert refusal.startswith(f"{path}:2: delivery.circuit_failure_rate: expected a number")


def test_a_retired_circuit_failure_threshold_still_loads_and_check_says_what_replaced_it(
    tmp_path: Path,
) -> None:
    path = main_file(
        tmp_path,
        "delivery:\n  circuit_failure_threshold: 5\n  circuit_cooldown_s: 20\n" + "hooks:" + HOOK,
    )

    settings = load_settings(path, env={})
    assert settings.delivery == DeliverySettings(
        circuit_cooldown_s=20, retry_topic_prefix="hookrelay.retry."
    )
    assert config_warnings(settings) == [
        f"{path}:2: delivery.circuit_failure_threshold: replaced by circuit_failure_rate, "
        "circuit_window and circuit_min_attempts (the circuit now opens on a failure rate, not "
        "on consecutive failures); ignored, remove it"
    ]
    properties = json_schemas()["hookrelay.schema.json"]["$defs"]["DeliverySettings"]["properties"]
    assert properties["circuit_failure_threshold"]["deprecated"] is True


def test_retry_on_status_accepts_only_4xx(tmp_path: Path) -> None:
    path = main_file(tmp_path, "delivery:\n  retry_on_status: [429, 503]\n")

    assert refusals(path) == [
        f"{path}:2: delivery.retry_on_status[1]: "
        "expected a 4xx status code (5xx are always retried)"
    ]


def test_shutdown_hard_deadline_must_exceed_grace(tmp_path: Path) -> None:
    path = main_file(tmp_path, "shutdown:\n  grace_s: 30\n  hard_deadline_s: 30\n")

    assert refusals(path) == [
        f"{path}:3: shutdown.hard_deadline_s: expected a number greater than grace_s"
    ]


def test_dead_letter_topic_must_not_be_a_consumed_topic(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  topics: [events, dlq]\ndead_letter_topic: dlq\n")

    assert refusals(path) == [
        f"{path}:3: dead_letter_topic: expected a topic not listed in kafka.topics "
        "(hookrelay would consume its own dead letters)"
    ]


def test_topic_names_follow_kafka_rules(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  topics: [identity events]\n")

    assert refusals(path) == [
        f"{path}:2: kafka.topics[0]: "
        "expected a Kafka topic name: 1-249 characters of A-Z a-z 0-9 . _ -"
    ]


def test_settings_are_frozen() -> None:
    settings = Settings()

    with pytest.raises(pydantic.ValidationError):
        settings.kafka.group_id = "other"  # type: ignore[misc]


def test_loading_the_same_content_twice_gives_equal_settings(tmp_path: Path) -> None:
    path = main_file(tmp_path, "hooks:" + HOOK)
    first = load_settings(path, env={})
    path.write_text("# a comment moves every line\n" + path.read_text(), encoding="utf-8")

    assert load_settings(path, env={}) == first


# ── YAML: types, keys, syntax ───────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("value", ["0777", "true", "12.5", "2024-01-01"])
def test_non_string_is_refused_where_a_string_is_expected(tmp_path: Path, value: str) -> None:
    path = main_file(tmp_path, f"kafka:\n  group_id: {value}\n")

    assert refusals(path) == [f"{path}:2: kafka.group_id: expected a string; quote the value"]


@pytest.mark.parametrize("value", ["no", "yes", "on", "off"])
def test_yes_no_on_off_stay_strings(tmp_path: Path, value: str) -> None:
    path = main_file(tmp_path, f"kafka:\n  group_id: {value}\n")

    assert load_settings(path, env={}).kafka.group_id == value


def test_enabled_no_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      enabled: no\n")

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].enabled: "
        "expected true or false (YAML 1.2 reads yes/no/on/off as text)"
    ]


def test_yaml_1_1_directive_is_refused(tmp_path: Path) -> None:
    path = main_file(tmp_path, "%YAML 1.1\n---\nkafka:\n  group_id: no\n")

    assert refusals(path) == [
        f"{path}:1: hookrelay reads YAML 1.2 only (1.1 turns yes/no/on/off into booleans)"
    ]


def test_boolean_is_refused_where_a_number_is_expected(tmp_path: Path) -> None:
    path = main_file(tmp_path, "http:\n  timeout_s: true\n")

    assert refusals(path) == [f"{path}:2: http.timeout_s: expected a number, not true/false"]


def test_integer_is_accepted_where_seconds_are_expected(tmp_path: Path) -> None:
    path = main_file(tmp_path, "http:\n  timeout_s: 3\n")

    assert load_settings(path, env={}).http.timeout_s == 3.0


def test_fraction_is_refused_where_an_integer_is_expected(tmp_path: Path) -> None:
    path = main_file(tmp_path, "http:\n  max_connections: 1.5\n")

    assert refusals(path) == [f"{path}:2: http.max_connections: expected an integer"]


def test_unknown_key_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    path = main_file(tmp_path, "http:\n  timout_s: 3\n")

    assert refusals(path) == [
        f"{path}:2: http.timout_s: unknown key 'timout_s'; did you mean 'timeout_s'?"
    ]


def test_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path: Path) -> None:
    path = main_file(tmp_path, "logging:\n  colour: true\n")

    assert refusals(path) == [
        f"{path}:2: logging.colour: unknown key 'colour'; expected one of: level, format"
    ]


def test_source_file_cannot_be_set_from_the_file(tmp_path: Path) -> None:
    path = main_file(tmp_path, "source_file: /etc/other.yaml\n")

    assert refusals(path) == [
        f"{path}:1: source_file: unknown key 'source_file'; expected one of: kafka, "
        "dead_letter_topic, control_topic, http, delivery, admin, logging, shutdown, outcomes, "
        "tracing, ingest, workers, hooks, hooks_file"
    ]


def test_duplicate_key_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = main_file(tmp_path, "http:\n  timeout_s: 3\n  max_connections: 9\n  timeout_s: 4\n")

    assert refusals(path) == [
        f"{path}:4: http.timeout_s: duplicate key 'timeout_s' (first at line 2)"
    ]


def test_duplicate_key_inside_a_hook_is_refused(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      url: https://other.example.com/\n")

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].url: duplicate key 'url' (first at line 4)"
    ]


def test_non_text_key_is_refused(tmp_path: Path) -> None:
    path = main_file(tmp_path, "http:\n  1: 3\n")

    assert refusals(path) == [f"{path}:2: http: expected text keys; quote this key"]


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  topics: [a, b\nhttp: {}\n")

    [issue] = refusals(path)

    assert issue.startswith(f"{path}:3: invalid YAML: ")


def test_yaml_syntax_error_does_not_quote_the_source_line(tmp_path: Path) -> None:
    path = main_file(tmp_path, "hooks:\n  - signing_key: s3cr3t-value: oops\n")

    [issue] = refusals(path)

    assert issue == f"{path}:2: invalid YAML: mapping values are not allowed here"


def test_missing_main_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    assert refusals(path) == [f"{path}: cannot read this file: No such file or directory"]


def test_main_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = main_file(tmp_path, "- kafka\n")

    assert refusals(path) == [
        f"{path}:1: expected a mapping of sections (kafka, http, delivery, ...)"
    ]


def test_section_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka: localhost:9092\n")

    assert refusals(path) == [f"{path}:1: kafka: expected a mapping"]


def test_recursive_alias_is_refused_not_followed(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  topics: &t [a, *t]\n")

    assert refusals(path) == [f"{path}:2: kafka.topics[1]: expected a string, found no value"]


def test_merge_keys_share_settings_between_hooks(tmp_path: Path) -> None:
    path = with_hooks(
        tmp_path,
        """
        - &defaults
          id: a
          events: ["*"]
          url: https://a.example.com/
          max_concurrency: 2
        - <<: *defaults
          id: b
        """,
    )

    first, second = load_settings(path, env={}).hooks

    assert (second.id, second.url, second.max_concurrency) == ("b", first.url, 2)


# ── ${VAR} expansion ────────────────────────────────────────────────────────────────────────────


def test_variables_are_expanded_in_string_values(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  group_id: relay-${REGION}-${STAGE}\n")

    settings = load_settings(path, env={"REGION": "eu", "STAGE": "prod"})

    assert settings.kafka.group_id == "relay-eu-prod"


def test_numeric_value_from_a_variable_is_accepted(tmp_path: Path) -> None:
    path = main_file(tmp_path, "http:\n  max_connections: ${CONNS}\n  timeout_s: ${T}\n")

    settings = load_settings(path, env={"CONNS": "64", "T": "2.5"})

    assert (settings.http.max_connections, settings.http.timeout_s) == (64, 2.5)


def test_boolean_from_a_variable_is_accepted_as_true_or_false(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      enabled: ${CRM_ENABLED}\n")

    assert load_settings(path, env={"CRM_ENABLED": "false"}).hooks[0].enabled is False


def test_double_dollar_writes_a_literal_reference(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  client_id: $${NOT_EXPANDED}-$$-x\n")

    assert load_settings(path, env={}).kafka.client_id == "${NOT_EXPANDED}-$$-x"


def test_unset_variable_is_refused_with_line(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  topics: [identity.events]\n  group_id: ${GROUP}\n")

    assert refusals(path) == [f"{path}:3: kafka.group_id: environment variable GROUP is not set"]


def test_variable_set_to_empty_text_is_not_unset(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  client_id: relay${SUFFIX}\n")

    assert load_settings(path, env={"SUFFIX": ""}).kafka.client_id == "relay"


def test_malformed_reference_is_refused(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  group_id: ${GROUP\n")

    assert refusals(path) == [
        f"{path}:2: kafka.group_id: "
        "malformed ${...}; expected ${NAME}, or $${ for a literal ${"
    ]


def test_variables_default_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOKRELAY_TEST_GROUP", "from-os-environ")
    path = main_file(tmp_path, "kafka:\n  group_id: ${HOOKRELAY_TEST_GROUP}\n")

    assert load_settings(path).kafka.group_id == "from-os-environ"


def test_values_from_the_environment_never_appear_in_errors(tmp_path: Path) -> None:
    secret = "hunter2-s3cr3t"
    path = with_hooks(
        tmp_path,
        """
        - id: crm-sync
          events: ["${EVENT}"]
          url: "${URL}"
          signing_key: ${KEY}
          max_concurrency: ${CONCURRENCY}
        """,
    )
    env = {
        "EVENT": f"{secret}*",
        "URL": f"https://user:{secret}@crm.example.com/",
        "KEY": "",
        "CONCURRENCY": secret,
    }

    issues = refusals(path, env)

    hooks = tmp_path / "hooks.yaml"
    assert issues == [
        f"{hooks}:3: hooks[0].events[0]: expected an event name like User.Created, "
        "a prefix wildcard like Organization.* or *",
        f"{hooks}:4: hooks[0].url: credentials in the URL are refused: URLs end up in logs and "
        "proxies; send them in headers (e.g. Authorization) instead",
        f"{hooks}:5: hooks[0].signing_key: expected a non-empty signing key",
        f"{hooks}:6: hooks[0].max_concurrency: expected an integer",
    ]
    assert all(secret not in issue and "input" not in issue for issue in issues)


# ── Hooks file ──────────────────────────────────────────────────────────────────────────────────


def test_errors_inside_the_hooks_file_name_that_file_and_line(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      rate_limit: {per_second: 0}\n")

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].rate_limit.per_second: expected a number > 0"
    ]


def test_missing_hooks_file_is_refused_at_the_line_naming_it(tmp_path: Path) -> None:
    path = main_file(tmp_path, "logging:\n  level: info\nhooks_file: gone.yaml\n")

    assert refusals(path) == [
        f"{path}:3: hooks_file: cannot read {tmp_path / 'gone.yaml'}: No such file or directory"
    ]


def test_hooks_file_and_inline_hooks_together_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "hooks.yaml", "hooks:" + HOOK)
    path = main_file(tmp_path, "hooks_file: hooks.yaml\nhooks:" + HOOK)

    assert refusals(path) == [
        f"{path}:1: hooks_file: use either hooks_file or an inline hooks list, not both"
    ]


def test_hooks_file_without_hooks_key_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "hooks.yaml", "hook:" + HOOK)
    path = main_file(tmp_path, "hooks_file: hooks.yaml\n")

    hooks = tmp_path / "hooks.yaml"
    assert refusals(path) == [
        f"{hooks}:1: hook: unknown key 'hook'; did you mean 'hooks'?",
        f"{hooks}:1: missing required key 'hooks'",
    ]


def test_empty_hooks_list_is_allowed_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path, "hooks.yaml", "hooks: []\n")
    settings = load_settings(main_file(tmp_path, "hooks_file: hooks.yaml\n"), env={})

    assert settings.hooks == ()
    assert config_warnings(settings) == [
        f"{tmp_path / 'hooks.yaml'}:1: hooks: "
        "no enabled hooks: events are consumed and committed without any delivery"
    ]


def test_issues_from_both_files_are_collected_in_file_order(tmp_path: Path) -> None:
    write(
        tmp_path,
        "hooks.yaml",
        """
        hooks:
          - id: a
            events: [User.Created]
            url: ftp://a.example.com/
          - id: b
            events: [User*]
            url: https://b.example.com/
        """,
    )
    path = main_file(
        tmp_path, "http:\n  timeout_s: 0\nlogging:\n  level: loud\nhooks_file: hooks.yaml\n"
    )

    hooks = tmp_path / "hooks.yaml"
    assert refusals(path) == [
        f"{path}:2: http.timeout_s: expected a number > 0",
        f"{path}:4: logging.level: expected one of: debug, info, warning, error",
        f"{hooks}:4: hooks[0].url: expected an http:// or https:// URL",
        f"{hooks}:6: hooks[1].events[0]: expected an event name like User.Created, "
        "a prefix wildcard like Organization.* or *",
    ]


# ── Hook rules ──────────────────────────────────────────────────────────────────────────────────


def test_missing_required_key_points_at_the_hook(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, "  - id: crm-sync\n    events: [User.Created]\n")

    assert refusals(path) == [f"{tmp_path / 'hooks.yaml'}:2: hooks[0]: missing required key 'url'"]


def test_duplicate_hook_ids_are_refused_naming_both_lines(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + HOOK)

    hooks = tmp_path / "hooks.yaml"
    assert refusals(path) == [
        f"{hooks}:6: hooks[1].id: duplicate hook id; already used by hooks[0] at {hooks}:2"
    ]


@pytest.mark.parametrize("hook_id", ['""', "a" * 22, "crm sync", "crm.sync", "crm/sync", "café"])
def test_hook_id_outside_the_allowed_alphabet_is_refused(tmp_path: Path, hook_id: str) -> None:
    path = with_hooks(tmp_path, HOOK.replace("crm-sync", hook_id))

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:2: hooks[0].id: "
        "expected 1-21 characters of A-Z a-z 0-9 _ - (it is sent as hookId)"
    ]


def test_hook_id_of_21_characters_is_accepted(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK.replace("crm-sync", "A_z-9" * 4 + "x"))

    assert load_settings(path, env={}).hooks[0].id == "A_z-9A_z-9A_z-9A_z-9x"


@pytest.mark.parametrize(
    "pattern", ["User.Created", "PostSignIn", "Organization.*", "*", "User.Data.*", "Custom.v2"]
)
def test_event_patterns_accepted(pattern: str) -> None:
    hook = Hook(id="h", events=(pattern,), url="https://x.example.com/")

    assert hook.events == (pattern,)


@pytest.mark.parametrize(
    "pattern",
    ["User*", "*.Created", "a..b", ".User", "User.", "User.*.Created", "**", "", "User Created"],
)
def test_event_patterns_refused(tmp_path: Path, pattern: str) -> None:
    path = with_hooks(tmp_path, HOOK.replace("[User.Created]", f'["{pattern}"]'))

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:3: hooks[0].events[0]: expected an event name like "
        "User.Created, a prefix wildcard like Organization.* or *"
    ]


def test_hook_without_events_is_refused(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK.replace("[User.Created]", "[]"))

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:3: hooks[0].events: expected a non-empty list"
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x.example.com/", "expected an http:// or https:// URL"),
        ("crm.example.com/hooks", "expected an http:// or https:// URL"),
        ("https:///path-only", "expected a URL with a host"),
        ("https://x.example.com:99999/", "expected a port from 0 to 65535 after the host"),
        ("https://x.example.com/a b", "expected a URL without spaces or control characters"),
        # urlsplit's own "Invalid IPv6 URL" came out as pydantic's "Value error, ..."
        ("http://[::1:5001/x", "expected a URL; brackets hold an IPv6 address: http://[::1]:8080/"),
        (
            "https://user:pw@x.example.com/",
            "credentials in the URL are refused: URLs end up in logs and proxies; "
            "send them in headers (e.g. Authorization) instead",
        ),
        # A breaker's trial: accepted here, each refused by the SSRF guard at every delivery.
        *[
            (
                f"http://{host}:8080/",
                "the host is an IP address in a non-canonical form; "
                "write it as a dotted quad (e.g. 127.0.0.1)",
            )
            for host in ("127.1", "0177.0.0.1", "2130706433", "0")
        ],
    ],
)
def test_url_rules(tmp_path: Path, url: str, message: str) -> None:
    path = with_hooks(tmp_path, HOOK.replace("https://crm.example.com/hooks/logto", f'"{url}"'))

    assert refusals(path) == [f"{tmp_path / 'hooks.yaml'}:4: hooks[0].url: {message}"]


def test_headers_mapping_becomes_ordered_pairs(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + '      headers: {X-Source: identity, X-Empty: ""}\n')

    assert load_settings(path, env={}).hooks[0].headers == (
        ("X-Source", "identity"),
        ("X-Empty", ""),
    )


def test_headers_given_as_pairs_in_code_are_accepted() -> None:
    hook = Hook(id="h", events=("*",), url="https://x.example.com/", headers=(("X-A", "1"),))

    assert hook.headers == (("X-A", "1"),)
    assert hook.model_dump()["headers"] == {"X-A": "1"}


@pytest.mark.parametrize(
    "name",
    [
        "Content-Type",
        "logto-signature-sha-256",
        "Webhook-Id",
        "webhook-timestamp",
        "WEBHOOK-SIGNATURE",
        "content-length",
        "Host",
        "traceparent",
        "TraceState",
    ],
)
def test_headers_set_by_hookrelay_cannot_be_overridden(tmp_path: Path, name: str) -> None:
    path = with_hooks(tmp_path, HOOK + f"      headers:\n        X-Ok: yes\n        {name}: x\n")

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:7: hooks[0].headers.{name}: "
        "this header is set by hookrelay and cannot be overridden"
    ]


@pytest.mark.parametrize(
    "name",
    ["Expect", "Connection", "keep-alive", "TE", "Trailer", "Upgrade", "Proxy-Authorization"],
)
def test_headers_that_change_how_a_request_travels_are_refused(tmp_path: Path, name: str) -> None:
    """A breaker's trial: ``Expect: 100-continue`` passed check, then every delivery to a
    receiver that does not answer 100 timed out."""
    path = with_hooks(tmp_path, HOOK + f"      headers:\n        {name}: x\n")

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:6: hooks[0].headers.{name}: this header changes how the "
        "request travels (connection handling, expectations, upgrades), not what it says; "
        "hookrelay's HTTP client manages it"
    ]


def test_header_name_must_be_an_http_token(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + '      headers: {"X Source": a}\n')

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].headers.X Source: "
        "expected an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)"
    ]


def test_header_value_with_line_break_is_refused(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + '      headers: {X-A: "a\\r\\nInjected: 1"}\n')

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].headers.X-A: expected a header value without "
        "control characters; found '\\r' at position 1 (only tab is allowed)"
    ]


@pytest.mark.parametrize("value", ["a\x01b", "a\x7fb", "a\x0bb", "a\x1fb", "\x00"])
def test_control_characters_from_the_environment_are_refused_in_header_values(
    tmp_path: Path, value: str
) -> None:
    """A value that passed the loader but that aiohttp refuses would fail every delivery."""
    path = with_hooks(tmp_path, HOOK + '      headers: {X-Ctl: "${CTLVAL}", X-Tab: "a\tb"}\n')

    control = next(char for char in value if char < " " or char == "\x7f")
    assert refusals(path, env={"CTLVAL": value}) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].headers.X-Ctl: expected a header value without "
        f"control characters; found {control!r} at position {value.index(control)} "
        "(only tab is allowed)"
    ]


def test_header_value_must_be_text(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      headers: {X-Version: 2}\n")

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].headers.X-Version: "
        "expected a string; quote the value"
    ]


def test_header_names_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      headers:\n        X-A: '1'\n        x-a: '2'\n")

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:7: hooks[0].headers.x-a: "
        "header given twice (names are case-insensitive)"
    ]


def test_rate_limit_capacity_defaults_to_per_second_rounded_up() -> None:
    assert RateLimit(per_second=2.5).effective_burst == 3
    assert RateLimit(per_second=0.1).effective_burst == 1
    assert RateLimit(per_second=20, burst=40).effective_burst == 40


def test_rate_limit_capacity_keeps_20_ms_of_the_rate_back_for_jitter() -> None:
    assert RateLimit(per_second=50).capacity == 49
    assert RateLimit(per_second=500, burst=500).capacity == 490
    assert RateLimit(per_second=20, burst=20).capacity == 19  # at least one token back
    assert RateLimit(per_second=2.5).capacity == 2
    assert RateLimit(per_second=0.1).capacity == 1  # never below one token
    assert RateLimit(per_second=1000, burst=5).capacity == 1


def test_rate_limit_burst_must_be_at_least_one(tmp_path: Path) -> None:
    path = with_hooks(
        tmp_path, HOOK + "      rate_limit:\n        per_second: 1\n        burst: 0\n"
    )

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:7: hooks[0].rate_limit.burst: expected a number >= 1"
    ]


def test_max_concurrency_is_bounded(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      max_concurrency: 1025\n")

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].max_concurrency: expected a number <= 1024"
    ]


def test_hook_timeout_falls_back_to_the_http_timeout() -> None:
    http = HttpSettings(timeout_s=7)
    hook = Hook(id="h", events=("*",), url="https://x.example.com/")

    assert hook.effective_timeout_s(http) == 7.0
    assert hook.model_copy(update={"timeout_s": 2.0}).effective_timeout_s(http) == 2.0


def test_hook_retry_on_status_overrides_the_delivery_default() -> None:
    delivery = DeliverySettings()
    default = Hook(id="h", events=("*",), url="https://x.example.com/")
    strict = Hook(id="s", events=("*",), url="https://x.example.com/", retry_on_status=(409,))

    assert default.effective_retry_on_status(delivery) == (408, 425, 429)
    assert [default.is_retryable_status(s, delivery) for s in (429, 409, 503, 404, 302)] == [
        True,
        False,
        True,
        False,
        False,
    ]
    assert [strict.is_retryable_status(s, delivery) for s in (429, 409, 500)] == [False, True, True]


# ── Signing keys ────────────────────────────────────────────────────────────────────────────────


def test_signing_key_file_is_relative_to_the_yaml_file_with_one_newline_stripped(
    tmp_path: Path,
) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "crm.key").write_bytes(b"k\xc3\xa9y with spaces\r\n")
    path = with_hooks(tmp_path, HOOK + "      signing_key_file: secrets/crm.key\n")

    key = load_settings(path, env={}).hooks[0].signing_key

    assert key is not None
    assert key.get_secret_value() == "kéy with spaces"


def test_signing_key_file_path_may_use_a_variable(tmp_path: Path) -> None:
    (tmp_path / "crm.key").write_text("from-file\r\n", encoding="utf-8")
    path = with_hooks(tmp_path, HOOK + "      signing_key_file: ${KEYS}/crm.key\n")

    key = load_settings(path, env={"KEYS": str(tmp_path)}).hooks[0].signing_key

    assert key is not None and key.get_secret_value() == "from-file"


def test_missing_signing_key_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      signing_key_file: keys/crm.key\n")

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].signing_key_file: "
        f"cannot read signing key file {tmp_path / 'keys' / 'crm.key'}: No such file or directory"
    ]


def test_signing_key_file_that_is_not_utf8_is_refused_without_its_content(tmp_path: Path) -> None:
    (tmp_path / "crm.key").write_bytes(b"\xffs3cr3t")
    path = with_hooks(tmp_path, HOOK + "      signing_key_file: crm.key\n")

    [issue] = refusals(path)

    assert issue == (
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].signing_key_file: "
        f"signing key file {tmp_path / 'crm.key'} is not UTF-8 text"
    )


def test_empty_signing_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "crm.key").write_text("\n", encoding="utf-8")
    path = with_hooks(tmp_path, HOOK + "      signing_key_file: crm.key\n")

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].signing_key_file: "
        f"signing key file {tmp_path / 'crm.key'} is empty"
    ]


def test_signing_key_and_signing_key_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "crm.key").write_text("k", encoding="utf-8")
    path = with_hooks(tmp_path, HOOK + "      signing_key: ${K}\n      signing_key_file: crm.key\n")

    assert refusals(path, {"K": "k"}) == [
        f"{tmp_path / 'hooks.yaml'}:6: hooks[0].signing_key_file: "
        "use either signing_key or signing_key_file, not both"
    ]


def test_signing_key_must_be_text(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      signing_key: 123456\n")

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].signing_key: expected a string; quote the value"
    ]


def test_signing_key_is_hidden_in_reprs(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      signing_key: ${K}\n")

    settings = load_settings(path, env={"K": "very-secret-key"})

    assert "very-secret-key" not in repr(settings)
    assert "very-secret-key" not in str(settings.model_dump())


# ── Warnings ────────────────────────────────────────────────────────────────────────────────────


def test_warns_about_unknown_event_names_with_line(tmp_path: Path) -> None:
    path = with_hooks(
        tmp_path,
        """
        - id: crm-sync
          events:
            - User.Created
            - User.Creatd
            - Organisation.*
            - Billing.Invoice.Paid
          url: https://crm.example.com/
        """,
    )

    hooks = tmp_path / "hooks.yaml"
    assert config_warnings(load_settings(path, env={})) == [
        f"{hooks}:5: hooks[0].events[1]: 'User.Creatd' is not a known Logto hook event "
        "(still routed if it is ever published); did you mean 'User.Created'?",
        f"{hooks}:6: hooks[0].events[2]: 'Organisation.*' matches no known Logto hook event "
        "(still routed if one is ever published)",
        f"{hooks}:7: hooks[0].events[3]: 'Billing.Invoice.Paid' is not a known Logto hook event "
        "(still routed if it is ever published)",
    ]


def test_warns_about_inline_signing_keys_but_not_variables_or_files(tmp_path: Path) -> None:
    (tmp_path / "b.key").write_text("b", encoding="utf-8")
    path = with_hooks(
        tmp_path,
        """
        - id: a
          events: ["*"]
          url: https://a.example.com/
          signing_key: written-in-the-file
        - id: b
          events: ["*"]
          url: https://b.example.com/
          signing_key_file: b.key
        - id: c
          events: ["*"]
          url: https://c.example.com/
          signing_key: ${C_KEY}
        """,
    )

    assert config_warnings(load_settings(path, env={"C_KEY": "c"})) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].signing_key: "
        "signing key written inline; use ${VAR} or signing_key_file to keep it secret"
    ]


def test_warns_about_plain_http_to_a_remote_host(tmp_path: Path) -> None:
    path = with_hooks(
        tmp_path,
        """
        - id: remote
          events: ["*"]
          url: http://crm.example.com/hook
        - id: local
          events: ["*"]
          url: http://localhost:8787/hook
        - id: v6
          events: ["*"]
          url: http://[::1]:8787/hook
        - id: signed
          events: ["*"]
          url: http://crm.example.com/signed
          signing_key: ${KEY}
        """,
    )

    warnings = config_warnings(load_settings(path, env={"KEY": "k" * 32}))
    assert [w for w in warnings if "plain http" in w] == [
        f"{tmp_path / 'hooks.yaml'}:4: hooks[0].url: "
        "events (personal data) go over plain http to a host that is not loopback; use https",
        f"{tmp_path / 'hooks.yaml'}:13: hooks[3].url: "
        "signed events go over plain http to a host that is not loopback; use https",
    ]


def test_warns_when_the_ssrf_guard_refuses_a_hooks_address(tmp_path: Path) -> None:
    """The README's first example pointed at 127.0.0.1 without allowing it: check said ok
    and every delivery was refused (new-user trial)."""
    hooks = """
        hooks:
          - {id: local, events: ["*"], url: "http://localhost:8787/hook"}
          - {id: v6, events: ["*"], url: "http://[::1]:8787/hook"}
          - {id: meta, events: ["*"], url: "http://169.254.169.254/latest"}
          - {id: named, events: ["*"], url: "https://crm.example.com/hook"}
          - {id: allowed, events: ["*"], url: "http://10.1.2.3/hook", allow_networks: [10.0.0.0/8]}
        """
    path = main_file(tmp_path, hooks)
    warnings = [w for w in config_warnings(load_settings(path, env={})) if "refused" in w]
    assert [w.split(": ")[1] for w in warnings] == ["hooks[0].url", "hooks[1].url", "hooks[2].url"]
    assert "allow it with http.allow_networks" in warnings[0]
    # The entry to add names the address itself (a new user was told "e.g. 127.0.0.0/8" for
    # a private 10.x address, which would not help).
    assert [w.rpartition("e.g. ")[2] for w in warnings] == [
        "allow_networks: [127.0.0.1/32])", "allow_networks: [::1/128])",
        "allow_networks: [169.254.169.254/32])",
    ]  # fmt: skip
    allow = "http:\n  allow_networks: [127.0.0.0/8, ::1/128]\n"
    path = main_file(tmp_path, allow + textwrap.dedent(hooks).lstrip("\n"))
    warnings = [w for w in config_warnings(load_settings(path, env={})) if "refused" in w]
    assert [w.split(": ")[1] for w in warnings] == ["hooks[2].url"]


def test_warns_when_every_hook_is_disabled(tmp_path: Path) -> None:
    path = main_file(tmp_path, "hooks:" + HOOK + "      enabled: false\n")

    assert config_warnings(load_settings(path, env={})) == [
        f"{path}:1: hooks: no enabled hooks: events are consumed and committed without any delivery"
    ]


def test_warnings_for_settings_built_in_code_have_no_file() -> None:
    settings = Settings(hooks=(Hook(id="h", events=("User.Creatd",), url="https://x.example/"),))

    assert config_warnings(settings) == [
        "hooks[0].events[0]: 'User.Creatd' is not a known Logto hook event "
        "(still routed if it is ever published); did you mean 'User.Created'?"
    ]


def test_settings_built_in_code_are_validated_too() -> None:
    hook = Hook(id="h", events=("*",), url="https://x.example/")

    with pytest.raises(pydantic.ValidationError):
        Settings(hooks=(hook, hook))
    with pytest.raises(pydantic.ValidationError):
        ShutdownSettings(grace_s=5, hard_deadline_s=1)


def test_binary_values_are_refused_rather_than_decoded(tmp_path: Path) -> None:
    config = tmp_path / "hookrelay.yaml"
    config.write_text(
        "hooks:\n  - id: a\n    events: ['*']\n    url: http://127.0.0.1:9/x\n"
        "    signing_key: !!binary Y2hhbmdlLW1l\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    [issue] = caught.value.issues
    assert (issue.line, issue.key_path) == (5, "hooks[0].signing_key")
    assert "!!binary" in issue.message
    assert "Y2hhbmdlLW1l" not in str(caught.value)


def test_check_flags_secrets_still_holding_an_example_placeholder(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "hookrelay.yaml",
        """
        admin:
          token: ${ADMIN_TOKEN}
        hooks:
          - id: crm
            events: ["*"]
            url: https://crm.example.com/
            signing_key: ${CRM_KEY}
          - id: audit
            events: ["*"]
            url: https://audit.example.com/
            signing_key: ${AUDIT_KEY}
        """,
    )
    env = {
        "ADMIN_TOKEN": "replace-me-admin-token-example",
        "CRM_KEY": "Replace-With-The-CRM-Key",
        "AUDIT_KEY": "a-real-random-key-0f3c9a",
    }
    placeholder = "still the placeholder from an example file; set a real secret"
    assert config_warnings(load_settings(path, env=env)) == [
        f"{path}:2: admin.token: {placeholder}",
        f"{path}:7: hooks[0].signing_key: {placeholder}",
    ]


def test_check_flags_credential_headers_written_inline(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "hookrelay.yaml",
        """
        hooks:
          - id: crm
            events: ["*"]
            url: https://crm.example.com/
            headers:
              Authorization: Bearer inline-secret-token-value
              X-Api-Key: ${API_KEY}
              X-Source: identity
        """,
    )
    assert config_warnings(load_settings(path, env={"API_KEY": "from-the-environment"})) == [
        f"{path}:6: hooks[0].headers.Authorization: credential header written inline; "
        "use ${VAR} to keep it out of the file",
    ]


def test_a_group_instance_id_from_the_environment_needs_a_session_that_covers_a_restart(
    tmp_path: Path,
) -> None:
    text = "kafka:\n  group_instance_id: ${POD_NAME}\n  session_timeout_s: 15\nhooks:" + HOOK
    settings = load_settings(main_file(tmp_path, text), env={"POD_NAME": "hookrelay-0"})

    assert settings.kafka.group_instance_id == "hookrelay-0"
    assert config_warnings(settings) == [
        f"{tmp_path / 'hookrelay.yaml'}:3: kafka.session_timeout_s: with kafka.group_instance_id, "
        "a member restarted within this timeout keeps its partitions without a rebalance; a "
        "worker process restarts in seconds, a replica (a deploy, a reboot) usually takes "
        "longer (e.g. 60)"
    ]


def test_a_fixed_group_instance_id_is_a_warning_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    path = main_file(
        tmp_path, "kafka:\n  group_instance_id: replica\n  session_timeout_s: 60\nhooks:" + HOOK
    )
    [warning] = config_warnings(load_settings(path, env={}))
    assert warning.startswith(f"{path}:2: kafka.group_instance_id: a fixed value: every replica")

    bad = main_file(tmp_path, "kafka:\n  group_instance_id: 'pod 0'\nhooks:" + HOOK)
    assert refusals(bad) == [
        f"{bad}:2: kafka.group_instance_id: expected a group instance id: 1-249 characters of "
        "A-Z a-z 0-9 . _ -"
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xef\xbb\xbfs3cr3t\n", "holds a byte order mark (U+FEFF; save the file as UTF-8 "
         "without BOM)"),
        (b"s3cr3t\r\r\n", "holds a control character (U+000D) at position 6"),
        (b"s3cr3t\n\n", "holds a control character (U+000A) at position 6"),
        (b"s3c\x01r3t", "holds a control character (U+0001) at position 3"),
        (b" s3cr3t\n", "starts or ends with whitespace"),
    ],
)  # fmt: skip
def test_a_signing_key_file_with_invisible_bytes_is_refused_without_its_content(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    (tmp_path / "crm.key").write_bytes(content)
    path = with_hooks(tmp_path, HOOK + "      signing_key_file: crm.key\n")

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].signing_key: the signing key {problem}; it "
        "would become part of the key, and no receiver could verify the signatures"
    ]


def test_a_signing_key_from_the_environment_with_a_bom_is_refused(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + '      signing_keys: ["${NEW}", "${OLD}"]\n')

    [issue] = refusals(path, {"NEW": "new-key", "OLD": "\ufeffold-key"})
    assert issue.startswith(
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].signing_keys[1]: the signing key holds a byte "
        "order mark"
    )


def test_produce_and_replay_load_without_the_secrets_they_never_use(tmp_path: Path) -> None:
    write(
        tmp_path,
        "hooks.yaml",
        """
        hooks:
          - id: crm
            events: ["*"]
            url: https://crm.example.com/
            signing_key: ${CRM_KEY}
          - id: audit
            events: ["*"]
            url: https://audit.example.com/
            signing_key_file: missing.key
        """,
    )
    path = main_file(tmp_path, "hooks_file: hooks.yaml\nadmin:\n  token: ${ADMIN_TOKEN}\n")
    assert len(refusals(path)) == 3  # run and check need them all

    produce = load_settings(path, env={}, skip=("hooks", "admin"))
    assert produce.hooks == () and produce.admin.token is None

    replay = load_settings(path, env={}, skip=("admin", "signing_keys"))
    assert [h.id for h in replay.hooks] == ["crm", "audit"]
    assert all(not h.active_signing_keys for h in replay.hooks)


def test_skipping_keys_still_reports_everything_else(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      signing_key: ${UNSET}\n      rate_limit: fast\n")

    [issue] = refusals_skipping(path, ("admin", "signing_keys"))
    assert issue.startswith(f"{tmp_path / 'hooks.yaml'}:6: hooks[0].rate_limit:")


def refusals_skipping(path: Path, skip: tuple[Skippable, ...]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={}, skip=skip)
    return [str(issue) for issue in caught.value.issues]


def test_a_tab_and_a_bare_star_are_explained(tmp_path: Path) -> None:
    tab = main_file(tmp_path, "kafka:\n\tgroup_id: x\n")
    [issue] = refusals(tab)
    assert issue.endswith("; YAML indents with spaces, not tabs")

    star = with_hooks(tmp_path, "  - id: a\n    events: [*]\n    url: https://a.example/\n")
    [issue] = refusals(star)
    assert issue.startswith(f"{tmp_path / 'hooks.yaml'}:3: invalid YAML: ")
    assert issue.endswith('; quote a bare * ("*"): YAML reads * as the start of an alias')


def test_a_port_alone_as_bootstrap_servers_says_which_shapes_are_accepted(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  bootstrap_servers: 9092\n")

    assert refusals(path) == [
        f"{path}:2: kafka.bootstrap_servers: expected a list of host:port, or one "
        'comma-separated string ("kafka-1:9092,kafka-2:9092"); a port alone names no host'
    ]


def test_a_duplicate_hook_id_shows_in_the_same_run_as_field_errors(tmp_path: Path) -> None:
    hooks = (
        "  - id: a\n    events: ['*']\n    url: https://a.example/\n    rate_limit: fast\n"
        "  - id: a\n    events: ['*']\n    url: https://b.example/\n"
    )
    path = with_hooks(tmp_path, hooks)
    file = tmp_path / "hooks.yaml"

    assert refusals(path) == [
        f"{file}:5: hooks[0].rate_limit: expected a mapping",
        f"{file}:6: hooks[1].id: duplicate hook id; already used by hooks[0] at {file}:2",
    ]


def test_check_warns_about_the_valid_parts_in_the_same_run_as_the_errors(tmp_path: Path) -> None:
    hooks = (
        "  - id: a\n    events: ['User.Creatd']\n    url: https://a.example/\n"
        "    rate_limit: fast\n"
        "  - id: b\n    events: ['*']\n    url: https://b.example/\n    timeout_s: -1\n"
        "  - id: c\n    events: ['Organisation.*']\n    url: https://c.example/\n"
    )
    path = with_hooks(tmp_path, hooks)
    file = tmp_path / "hooks.yaml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})

    assert [str(i) for i in caught.value.issues] == [
        f"{file}:5: hooks[0].rate_limit: expected a mapping",
        f"{file}:9: hooks[1].timeout_s: expected a number > 0",
    ]
    assert caught.value.warnings == [
        f"{file}:3: hooks[0].events[0]: 'User.Creatd' is not a known Logto hook event "
        "(still routed if it is ever published); did you mean 'User.Created'?",
        f"{file}:11: hooks[2].events[0]: 'Organisation.*' matches no known Logto hook event "
        "(still routed if one is ever published)",
    ]


def test_a_hook_missing_its_url_stands_aside_and_hides_no_other_warning(tmp_path: Path) -> None:
    hooks = (
        "  - id: a\n    events: ['*']\n"
        "  - id: b\n    events: ['Organisation.*']\n    url: https://b.example/\n"
    )
    path = with_hooks(tmp_path, hooks)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})

    assert [w.split(": ", 2)[1] for w in caught.value.warnings] == ["hooks[1].events[0]"]


def test_credential_headers_and_their_tokens_are_secrets_for_the_redactor() -> None:
    hook = Hook.model_validate({
        "id": "a", "events": ["*"], "url": "https://example.com/",
        "headers": {"Authorization": "Bearer tok-1234567890", "X-Api-Key": "k-abcdefgh",
                    "X-Source": "identity", "Cookie": "s=1"},
    })  # fmt: skip
    assert hook.credentials == ("Bearer tok-1234567890", "tok-1234567890", "k-abcdefgh", "s=1")


def test_an_unset_variable_is_reported_once_and_never_called_inline(tmp_path: Path) -> None:
    """Found by a new user's trial: ``check`` also said "signing key written inline" and
    "credential header written inline" for values that were ``${VAR}`` references."""
    path = with_hooks(tmp_path, """
        - id: crm-sync
          events: [User.Created]
          url: https://crm.example.com/hooks/logto
          signing_key: ${UNSET_KEY_A}
          headers: {Authorization: "Bearer ${UNSET_TOKEN_B}"}
    """)  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert [issue.message for issue in caught.value.issues] == [
        "environment variable UNSET_KEY_A is not set",
        "environment variable UNSET_TOKEN_B is not set",
    ]
    assert not [w for w in caught.value.warnings if "inline" in w]


def test_the_reference_hooks_file_explains_every_key_of_a_hook() -> None:
    """A new user looked for per-hook allow_networks and tls in the file that claims to list
    every key, and did not find them."""
    text = (CONFIG_DIR / "hooks.yaml").read_text(encoding="utf-8")
    listed = set(re.findall(r"^#   ([a-z_]+): ", text, re.MULTILINE))
    # The *_file keys are the loader's: it reads the files into signing_key(s).
    assert listed == {*Hook.model_fields, "signing_key_file", "signing_key_files"}


def test_warns_about_a_credential_in_a_url_query_written_inline(tmp_path: Path) -> None:
    """A new user's trial: a token in a hook URL's query string sat in a 0644 hooks.yaml and
    check said nothing."""
    path = with_hooks(tmp_path, """
        - {id: a, events: ["*"], url: "https://crm.example.com/h?apikey=Q1&tenant=x"}
        - {id: b, events: ["*"], url: "https://crm.example.com/h?format=json"}
        - {id: c, events: ["*"], url: "${URL_C}"}
    """)  # fmt: skip
    env = {"URL_C": "https://crm.example.com/h?access_token=Q2"}
    warnings = [w for w in config_warnings(load_settings(path, env=env)) if "query" in w]
    assert warnings == [
        f"{tmp_path / 'hooks.yaml'}:2: hooks[0].url: the query string carries a credential "
        "(apikey) written inline; take the whole url from ${VAR} to keep it out of the file"
    ]


def test_a_variable_holding_bytes_that_are_not_utf8_is_refused(tmp_path: Path) -> None:
    """A breaker's trial: SK=$'key\\xff' passed check, then every delivery crashed encoding
    the key (and a header value lost the byte silently)."""
    path = with_hooks(tmp_path, HOOK + "      signing_key: ${SK}\n      headers: {X-A: '${HV}'}\n")
    env = {"SK": "key\udcff", "HV": "a\udcffb"}  # what os.environ holds for those bytes
    assert refusals(path, env) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].signing_key: "
        "environment variable SK holds bytes that are not UTF-8 text",
        f"{tmp_path / 'hooks.yaml'}:6: hooks[0].headers.X-A: "
        "environment variable HV holds bytes that are not UTF-8 text",
    ]


def test_replay_loads_without_the_hooks_credential_headers(tmp_path: Path) -> None:
    """A breaker's trial: replay, which sends nothing, still needed a header's variable."""
    path = with_hooks(tmp_path, HOOK + '      headers: {Authorization: "Bearer ${HDR}"}\n')
    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].headers.Authorization: "
        "environment variable HDR is not set"
    ]
    settings = load_settings(path, env={}, skip=("admin", "signing_keys", "headers"))
    assert [(hook.id, hook.headers) for hook in settings.hooks] == [("crm-sync", ())]


def test_commands_that_sign_nothing_load_a_standard_webhooks_hook_without_its_key(
    tmp_path: Path,
) -> None:
    """A new user's trial: ``pause``, ``deliveries`` and ``replay`` refused a configuration
    ``check`` accepted, with "expected signing_key or signing_keys with standard_webhooks:
    true": they leave the keys out, and the scheme's check then found none."""
    key_file = tmp_path / "sw.key"
    key_file.write_text("whsec_" + "QUJD" * 8)
    path = with_hooks(tmp_path, HOOK + "      signing_key_file: sw.key\n"
                      "      standard_webhooks: true\n")  # fmt: skip
    assert [hook.standard_webhooks for hook in load_settings(path, env={}).hooks] == [True]
    settings = load_settings(path, env={}, skip=("admin", "signing_keys", "headers"))
    assert [(hook.id, hook.active_signing_keys) for hook in settings.hooks] == [("crm-sync", ())]


def test_aliases_that_expand_a_file_beyond_reason_are_refused_at_once(tmp_path: Path) -> None:
    """A breaker's 1 KB hooks file of nested aliases: ``check`` took 17 s and 1.5 GB, one
    level more over 9 GB, and a reload froze the daemon's event loop for as long."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    path = main_file(tmp_path, "x-bomb:\n" + "".join(f"  {line}\n" for line in levels))
    started = time.monotonic()
    [problem] = refusals(path)
    assert time.monotonic() - started < 5
    assert problem == (
        f"{path}:1: the aliases (*name) expand this file to over 100,000 values; write the "
        "repeated parts out, or alias fewer nested ones"
    )
    # A few aliases, as people use them, are fine.
    fine = with_hooks(tmp_path, HOOK + "      headers: &h {X-A: a}\n")
    assert load_settings(fine, env={}).hooks[0].headers == (("X-A", "a"),)


def test_warns_about_an_adaptive_latency_target_no_answer_can_reach(tmp_path: Path) -> None:
    path = with_hooks(
        tmp_path,
        """
        - id: slow-target
          events: ["*"]
          url: https://crm.example.com/hook
          timeout_s: 2
          rate_limit: {per_second: 50, adaptive: {latency_target_ms: 2000}}
        - id: fine
          events: ["*"]
          url: https://crm.example.com/hook
          rate_limit: {per_second: 50, adaptive: {latency_target_ms: 500}}
        """,
    )
    warnings = [w for w in config_warnings(load_settings(path, env={})) if "latency" in w]
    assert warnings == [
        f"{tmp_path / 'hooks.yaml'}:6: hooks[0].rate_limit.adaptive.latency_target_ms: at or "
        "beyond the hook's timeout (2 s): an answer times out before it is that slow, so "
        "latency never lowers the rate (timeouts still count as slow)"
    ]
