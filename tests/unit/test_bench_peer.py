"""The bench's Benthos peer without Go: its recipe, its generated pipeline, its table rows.

The build and the run are the bench's (``make bench``); these check what they are given."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, cast

import pytest

from tests.bench import peer, report
from tests.bench.cli import _peer_text, parse_args, steps
from tests.bench.daemon import HookSpec
from tests.bench.events import signing_key

RECEIVER = "http://127.0.0.1:4321"


def _config(hooks: int) -> dict[str, Any]:
    each = max(1, -(-64 // hooks))
    specs = [HookSpec(f"h{i}", each) for i in range(hooks)]
    return peer.pipeline_config(
        bootstrap="127.0.0.1:9092", topic="bench-backlog", group="bench-benthos-1",
        hooks=specs, receiver_url=RECEIVER, http_port=4195,
    )  # fmt: skip


def test_recipe_pins_benthos_and_only_the_components_the_pipeline_uses() -> None:
    go_mod = (peer.RECIPE / "go.mod").read_text()
    main = (peer.RECIPE / "main.go").read_text()
    assert f"github.com/benthosdev/benthos/v4 {peer.BENTHOS_VERSION}" in go_mod
    assert "redpanda-data" not in go_mod + (peer.RECIPE / "go.sum").read_text()
    assert "service.RunCLI(" in main
    imported = set(re.findall(r'"github.com/benthosdev/benthos/v4/public/components/(\w+)"', main))
    assert imported == {"io", "kafka", "prometheus", "pure"}


def test_one_hook_is_a_plain_http_client_with_all_the_concurrency() -> None:
    config = _config(1)
    source = config["input"]["kafka_franz"]
    assert source == {
        "seed_brokers": ["127.0.0.1:9092"], "topics": ["bench-backlog"],
        "consumer_group": "bench-benthos-1", "start_from_oldest": True,
    }  # fmt: skip
    output = config["output"]["http_client"]
    assert output["url"] == RECEIVER + "/h/h0"
    assert output["verb"] == "POST"
    assert output["max_in_flight"] == 64
    assert output["timeout"] == "10s"
    assert output["headers"]["logto-signature-sha-256"] == "${! @logto_signature }"
    assert output["headers"]["webhook-id"] == "${! @webhook_id }"
    assert output["headers"]["content-type"] == "application/json"
    assert config["http"]["address"] == "127.0.0.1:4195"
    assert config["pipeline"]["processors"] == [{"mapping": peer.VALIDATE_MAPPING}]


def test_ten_hooks_fan_out_each_with_its_path_key_and_share_of_the_concurrency() -> None:
    broker = _config(10)["output"]["broker"]
    assert broker["pattern"] == "fan_out"
    outputs = broker["outputs"]
    assert [o["http_client"]["url"] for o in outputs] == [f"{RECEIVER}/h/h{i}" for i in range(10)]
    assert [o["http_client"]["max_in_flight"] for o in outputs] == [7] * 10
    for index, output in enumerate(outputs):
        [processor] = output["processors"]
        mapping = processor["mapping"]
        assert f',\\"hookId\\":\\"h{index}\\"}}"' in mapping
        assert f'.hash("hmac_sha256", "{signing_key(f"h{index}")}").encode("hex")' in mapping
        assert f'"\\x00h{index}").hash("sha256")' in mapping


def test_hook_mapping_splices_without_a_comma_after_an_empty_object() -> None:
    mapping = peer.hook_mapping("crm-sync", "k")
    assert 'if $head == "{" { $head + "\\"hookId\\":\\"crm-sync\\"}" }' in mapping
    assert mapping.count("meta ") == 2


def test_a_changed_recipe_builds_anew(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe"
    shutil.copytree(peer.RECIPE, recipe)
    before = peer.recipe_digest(recipe)
    assert before == peer.recipe_digest(peer.RECIPE)
    (recipe / "main.go").write_text((recipe / "main.go").read_text() + "\n")
    assert peer.recipe_digest(recipe) != before


def test_without_go_the_peer_is_unavailable_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(peer.shutil, "which", lambda _name: None)
    with pytest.raises(peer.PeerUnavailableError) as caught:
        peer.build_benthos(cache=tmp_path)
    assert "\n" not in str(caught.value)
    assert "Go" in str(caught.value)
    assert not any(tmp_path.iterdir())


def test_peer_is_a_group_of_its_own() -> None:
    assert "peer" in parse_args([]).groups
    assert parse_args(["--only", "throughput,peer"]).groups == {"throughput", "peer"}


RESULTS: dict[str, dict[str, Any]] = {
    "peer_build": {"peer": "benthos", "version": "v4.27.0", "go": "go1.26.8 linux/amd64"},
    "baseline_1": {"requests_per_s": 6000.0, "cpu_s_per_1000": 0.125, "concurrency": 64},
    "baseline_10": {"requests_per_s": 5000.0, "cpu_s_per_1000": 0.16, "concurrency": 70},
    "throughput_1": {"deliveries_per_s": 4000.0, "cpu_s_per_1000": 0.25, "connections_opened": 64,
                     "ratio_to_baseline": 0.67, "baseline_cpu_s_per_1000": 0.125},
    "throughput_10": {"deliveries_per_s": 3000.0, "cpu_s_per_1000": 0.4,
                      "ratio_to_baseline": 0.6, "baseline_cpu_s_per_1000": 0.16},
    "peer_benthos_stock_1": {"version": "v4.27.0", "deliveries_per_s": 5000.0,
                             "cpu_s_per_1000": 0.5, "signatures_valid": True,
                             "webhook_ids_well_formed": True, "connections_opened": 9000},
    "peer_benthos_stock_10": {"version": "v4.27.0", "deliveries_per_s": 2000.0,
                              "cpu_s_per_1000": 0.2, "signatures_valid": True,
                              "webhook_ids_well_formed": False},
    "peer_benthos_keepalive_10": {"version": "v4.27.0", "deliveries_per_s": 6000.0,
                                  "cpu_s_per_1000": 0.1, "go_max_idle_conns_per_host": 70,
                                  "connections_opened": 70, "signatures_valid": True,
                                  "webhook_ids_well_formed": True},
}  # fmt: skip


def test_table_puts_hookrelay_benthos_and_the_bare_client_side_by_side() -> None:
    rows = {row.figure: row for row in report.rows(RESULTS)}
    one = rows["peer, 1 hook(s): deliveries/s, hookrelay / Benthos v4.27.0 / bare client"]
    assert one.value == "4,000 / 5,000 / 6,000 /s"
    assert one.vs_baseline == "hookrelay / Benthos 0.80"
    ten = rows["peer, 10 hook(s): deliveries/s, hookrelay / Benthos v4.27.0 / bare client"]
    assert ten.value == "3,000 / 2,000 / 5,000 /s"
    assert ten.vs_baseline == "hookrelay / Benthos 1.50"
    per_cpu = [r for r in report.rows(RESULTS) if "per CPU-second, hookrelay" in r.figure]
    assert [r.value for r in per_cpu] == ["4,000 / 2,000 / 8,000", "2,500 / 5,000 / 6,250"]
    assert [r.vs_baseline for r in per_cpu] == [
        "hookrelay / Benthos 2.00",
        "hookrelay / Benthos 0.50",
    ]
    assert [(r.target, r.met) for r in per_cpu] == [(">= 1.2", True), (">= 1.2", False)]
    assert rows["  Benthos bodies, signatures, webhook-ids as hookrelay's"].value == "NO"
    [connections, _] = [r for r in report.rows(RESULTS) if r.figure.startswith("  connections")]
    assert connections.value == "64 / 9,000 / n/a"
    keep = rows["  Benthos keeping 70 idle connections: deliveries/s, per CPU-second, connections"]
    assert keep.value == "6,000 /s, 10,000, 70"
    assert keep.vs_baseline == "hookrelay / Benthos 0.50, 0.25"
    assert _peer_text(RESULTS) == ", Benthos v4.27.0 (go1.26.8 linux/amd64)"


def test_the_table_holds_issue_17s_targets_per_cpu_second_and_for_worker_processes() -> None:
    results = {
        **RESULTS,
        "throughput_workers": {"workers": 2, "hooks": 10, "deliveries_per_s": 4800.0,
                               "ratio_to_one_process": 1.6, "ratio_to_benthos": 2.4},
    }  # fmt: skip
    table = report.rows(results)
    against_bare = [r for r in table if r.figure.startswith("  deliveries per CPU-second (")]
    # 1 hook: 4,000 per CPU-s against the bare client's 8,000; 10 hooks: 2,500 against 6,250.
    assert [(r.value, r.vs_baseline, r.target, r.met) for r in against_bare] == [
        ("4,000", "0.50", ">= 0.75", False),
        ("2,500", "0.40", ">= 0.7", False),
    ]
    rows = {row.figure: row for row in table}
    workers = rows["2 worker processes, 10 hooks, backlog: deliveries/s"]
    assert (workers.value, workers.vs_baseline, workers.met) == (
        "4,800 /s",
        "1.60x one process",
        True,
    )
    assert rows["  the same, against Benthos (stock) of this run"].met is True


def test_a_skipped_peer_is_one_row_and_the_rest_of_the_table_stays() -> None:
    results = {
        **{k: v for k, v in RESULTS.items() if not k.startswith("peer")},
        "peer_build": {"peer": "benthos", "version": "v4.27.0", "skipped": "no `go` on PATH"},
    }
    table = report.rows(results)
    assert [r.value for r in table if r.figure.startswith("peer")] == ["skipped"]
    assert any(r.figure.startswith("throughput, 10 hook(s)") for r in table)
    assert _peer_text(results) == ", Benthos peer skipped (no `go` on PATH)"


def test_the_keepalive_variant_alone_tells_go_to_keep_idle_connections(tmp_path: Path) -> None:
    def process(idle: int) -> peer.BenthosProcess:
        return peer.BenthosProcess(Path("benthos"), tmp_path / "c.json", 4195, tmp_path / "l", idle)

    assert process(0).env() is None
    env = process(70).env()
    assert env is not None
    assert env[peer.IDLE_ENV] == "70"
    assert process(0).argv() == ["benthos", "-c", str(tmp_path / "c.json")]
    assert process(0).ready_path == "/ready"


def test_peer_runs_follow_hookrelays_throughput_runs_stock_then_keepalive() -> None:
    args = parse_args(["--only", "throughput,peer"])
    build = peer.PeerBuild(Path("benthos"), "v4.27.0", "go", None)
    keys = [key for _, key, _ in steps(cast(Any, None), args, build)]
    start = keys.index("throughput_10") + 1
    assert keys[start : start + 4] == [
        "peer_benthos_stock_1", "peer_benthos_stock_10",
        "peer_benthos_keepalive_1", "peer_benthos_keepalive_10",
    ]  # fmt: skip
    assert not any(key.startswith("peer") for _, key, _ in steps(cast(Any, None), args, None))
