"""Generate the hookrelay Grafana dashboard, deploy/grafana/hookrelay.json.

  .venv/bin/python deploy/grafana/dashboard.py           rewrite hookrelay.json
  .venv/bin/python deploy/grafana/dashboard.py --check   exit 1 if hookrelay.json is stale

Built with Grafana's grafana-foundation-sdk (the dev extra pins it), so the JSON follows the
schema of the Grafana version the SDK targets (11.6; it imports into Grafana 10 and later).
Edit this file, never the JSON: tests/deploy/test_grafana_dashboard.py fails when the
committed JSON differs from what this script renders.

Queries read the recording rules of deploy/prometheus/hookrelay-rules.yaml where one exists
(per-hook rates, success ratios, latency buckets, lag) and the daemon's own metrics
(hookrelay/ops/metrics.py, plus prometheus_client's process collector) otherwise; the Ingest
row reads hookrelay ingest's metrics (``IngestMetrics``). Variables: ``datasource`` (any
Prometheus), ``job`` (the daemon's scrape job), ``instance`` and ``hook_id`` (several values
or All), ``ingest_job`` (hookrelay ingest's scrape job).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TypeAlias

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
    VariableSort,
)

Panel: TypeAlias = timeseries.Panel | stat.Panel | statetimeline.Panel

OUTPUT = Path(__file__).resolve().parent / "hookrelay.json"
UID = "hookrelay"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label filters shared by the queries. Retry topics are named <prefix><delay> with the
# default prefix "<group_id>.retry."; the event-topic views leave them out.
JOB = 'job=~"$job"'
# hookrelay ingest is scraped as a job of its own (on Kubernetes the ServiceMonitor scrapes
# both processes, as hookrelay-metrics and hookrelay-ingest-metrics).
INGEST = 'job=~"$ingest_job"'
HOOKS = 'job=~"$job", hook_id=~"$hook_id"'
PROCESS = 'job=~"$job", instance=~"$instance"'
EVENT_TOPICS = r'job=~"$job", topic!~".+\\.retry\\..+"'
QUANTILES = (0.5, 0.9, 0.99)

HALF, THIRD, SIXTH = 12, 8, 4  # grid columns (24 in all)
TALL, SHORT = 8, 4


def query(expr: str, legend: str = "__auto", ref_id: str = "A") -> prometheus.Dataquery:
    """A Prometheus range query on the dashboard's datasource variable."""
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .range()
        .datasource(DATASOURCE)
    )


def graph(
    title: str, description: str, unit: str, *targets: prometheus.Dataquery, width: int = HALF
) -> timeseries.Panel:
    """A time series panel; legend as a table with mean and max, tooltip sorted."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .span(width)
        .height(TALL)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    for index, target in enumerate(targets):
        panel.with_target(target.ref_id(chr(ord("A") + index)))
    return panel


def ratio_graph(title: str, description: str, target: prometheus.Dataquery) -> timeseries.Panel:
    """A 0..1 ratio with the alert threshold (0.9) drawn as a red area below it."""
    return (
        graph(title, description, "percentunit", target)
        .max(1)
        .thresholds(
            dash.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=None, color="red"), Threshold(value=0.9, color="transparent")])
        )
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.AREA)
        )
    )


def single(
    title: str, description: str, unit: str, expr: str, steps: list[Threshold] | None = None
) -> stat.Panel:
    """A stat panel showing the last value of one query (``0`` when the series is absent)."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(SIXTH)
        .height(SHORT)
        .no_value("0")
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(
            dash.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps(steps or [Threshold(value=None, color="text")])
        )
        .with_target(query(expr, legend=title))
    )


def states(
    title: str, description: str, expr: str, names: dict[int, tuple[str, str]]
) -> statetimeline.Panel:
    """A state timeline per hook; ``names`` maps each gauge value to (text, colour)."""
    mapping = ValueMap(
        options={
            str(value): ValueMappingResult(text=text, color=colour, index=index)
            for index, (value, (text, colour)) in enumerate(names.items())
        }
    )
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(HALF)
        .height(TALL)
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .mappings([mapping])
        .with_target(query(expr, legend="{{hook_id}}"))
    )


def quantiles(histogram_rule: str) -> list[prometheus.Dataquery]:
    """p50/p90/p99 per hook of a recorded ``job_hook_id_le:<histogram>_bucket:rate5m``."""
    return [
        query(
            f"histogram_quantile({q}, sum by (hook_id, le) ({histogram_rule}{{{HOOKS}}}))",
            legend=f"p{round(q * 100)} {{{{hook_id}}}}",
        )
        for q in QUANTILES
    ]


def variables() -> list[dash.DatasourceVariable | dash.QueryVariable]:
    """datasource, job (one), instance and hook_id (several, or All = any), ingest_job (one)."""

    def labels(name: str, label: str, source: str, many: bool) -> dash.QueryVariable:
        variable = (
            dash.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(source)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )
        if many:
            variable = variable.multi(True).include_all(True).all_value(".*")
        return variable

    return [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        # A gauge only the daemon exports, from start-up on: hookrelay ingest's jobs export
        # hookrelay_build_info too, and one of them picked here would empty every panel.
        labels("job", "Job", "label_values(hookrelay_in_flight_deliveries, job)", many=False),
        labels(
            "instance",
            "Instance",
            f"label_values(hookrelay_build_info{{{JOB}}}, instance)",
            many=True,
        ),
        # Every enabled hook's lane sets its circuit gauge at start, before any delivery.
        labels(
            "hook_id", "Hook", f"label_values(hookrelay_circuit_state{{{JOB}}}, hook_id)", many=True
        ),
        # The guard's close counter is set up at start-up, before any request.
        labels(
            "ingest_job",
            "Ingest job",
            "label_values(hookrelay_ingest_connections_closed_total, job)",
            many=False,
        ),
    ]


def overview() -> list[Panel]:
    ok_ratio = [
        Threshold(value=None, color="red"),
        Threshold(value=0.9, color="orange"),
        Threshold(value=0.99, color="green"),
    ]
    rule = "job_hook_id_outcome:hookrelay_deliveries:rate5m"
    delivered = f'{rule}{{{HOOKS}, outcome="delivered"}}'
    finished = f'{rule}{{{HOOKS}, outcome=~"delivered|dead_lettered"}}'
    return [
        single(
            "Ready replicas",
            "Replicas answering /readyz with 200 (hookrelay_ready).",
            "none",
            f"sum(hookrelay_ready{{{PROCESS}}})",
        ),
        single(
            "Events consumed/s",
            "Records consumed from the event topics (retry topics excluded).",
            "reqps",
            f"sum(job_topic:hookrelay_events_consumed:rate5m{{{EVENT_TOPICS}}})",
        ),
        single(
            "Delivered/s",
            "Webhooks delivered (2xx) per second, selected hooks.",
            "reqps",
            f"sum({delivered})",
        ),
        single(
            "Delivery success",
            "Delivered / (delivered + dead-lettered), selected hooks, 5 m.",
            "percentunit",
            f"sum({delivered}) / sum({finished})",
            ok_ratio,
        ),
        single(
            "Dead letters/s",
            "Records written to the dead-letter topic, every reason.",
            "reqps",
            f"sum(job_reason:hookrelay_dead_lettered:rate5m{{{JOB}}})",
            [Threshold(value=None, color="green"), Threshold(value=1e-9, color="red")],
        ),
        single(
            "Consumer lag",
            "Log-end minus committed offset, summed over the event topics.",
            "short",
            f"sum(job_topic:hookrelay_consumer_lag:sum{{{EVENT_TOPICS}}})",
        ),
    ]


def deliveries() -> list[Panel]:
    by_outcome = "sum by (hook_id, outcome) (job_hook_id_outcome:hookrelay_deliveries:rate5m{%s})"
    by_class = (
        "sum by (hook_id, status_class) (job_hook_id_status_class:hookrelay_attempts:rate5m{%s})"
    )
    return [
        graph(
            "Deliveries/s by hook and outcome",
            "Finished deliveries: delivered, dead_lettered, abandoned (left unsettled at "
            "shutdown or when a rebalance took the partition; made again by its next owner).",
            "reqps",
            query(by_outcome % HOOKS, "{{hook_id}} {{outcome}}"),
        ),
        ratio_graph(
            "Delivery success ratio by hook",
            "Delivered / (delivered + dead-lettered) over 5 m. A delivery is finished after "
            "its last retry, so this moves hours after the endpoint fails; see the attempt "
            "ratio.",
            query(f"job_hook_id:hookrelay_delivery_success:ratio_rate5m{{{HOOKS}}}", "{{hook_id}}"),
        ),
        graph(
            "Attempts/s by hook and status class",
            "Every POST: 2xx..5xx, timeout, connection_error, refused.",
            "reqps",
            query(by_class % HOOKS, "{{hook_id}} {{status_class}}"),
        ),
        ratio_graph(
            "Attempt success ratio by hook",
            "POST attempts answered 2xx over 5 m; HookrelayHookFailing fires below 90 % for 10 m.",
            query(f"job_hook_id:hookrelay_attempt_success:ratio_rate5m{{{HOOKS}}}", "{{hook_id}}"),
        ),
    ]


def latency() -> list[Panel]:
    return [
        graph(
            "End-to-end latency (Kafka record → 2xx)",
            "From the Kafka record timestamp to the 2xx answer, retries included; quantiles "
            "per hook over 5 m.",
            "s",
            *quantiles("job_hook_id_le:hookrelay_end_to_end_latency_seconds_bucket:rate5m"),
        ),
        graph(
            "Request duration (one POST)",
            "One POST, request sent to response read; quantiles per hook over 5 m.",
            "s",
            *quantiles("job_hook_id_le:hookrelay_request_duration_seconds_bucket:rate5m"),
        ),
    ]


def rate(metric: str, labels: str, by: str) -> str:
    """``sum by (<by>) (rate(<metric>{<labels>}[$__rate_interval]))``."""
    return f"sum by ({by}) (rate({metric}{{{labels}}}[$__rate_interval]))"


def retries() -> list[Panel]:
    scheduled = "sum by (hook_id, tier) (job_hook_id_tier:hookrelay_retries_scheduled:rate5m{%s})"
    return [
        graph(
            "Retries scheduled/s by hook and tier",
            "Retryable failures written to the retry topic of their next delay tier.",
            "reqps",
            query(scheduled % HOOKS, "{{hook_id}} → {{tier}}"),
        ),
        graph(
            "Retry records consumed/s by tier",
            "Retry records taken back from each tier's topic once due.",
            "reqps",
            query(rate("hookrelay_retries_consumed_total", PROCESS, "tier"), "{{tier}}"),
        ),
        graph(
            "Dead letters/s by reason",
            "Records written to the dead-letter topic: invalid records (not_json, oversized, "
            "...) and failed deliveries (permanent_failure, retries_exhausted, hook_gone, "
            "hook_removed). Replay them with `hookrelay replay`.",
            "reqps",
            query(
                f"sum by (reason) (job_reason:hookrelay_dead_lettered:rate5m{{{JOB}}})",
                "{{reason}}",
            ),
        ),
        graph(
            "Parked/s by hook and reason",
            "Deliveries moved to a retry topic without an attempt: slow, throttled "
            "(Retry-After), circuit_open, lane_full.",
            "reqps",
            query(
                rate("hookrelay_parked_total", HOOKS, "hook_id, reason"), "{{hook_id}} {{reason}}"
            ),
        ),
    ]


def lanes() -> list[Panel]:
    return [
        states(
            "Circuit state by hook",
            "Per hook, the worst replica: closed, open (deliveries parked), half-open (one probe).",
            f"max by (hook_id) (hookrelay_circuit_state{{{HOOKS}}})",
            {0: ("closed", "green"), 1: ("open", "red"), 2: ("half-open", "orange")},
        ),
        states(
            "Hooks paused (410 Gone, or an operator)",
            "A hook whose endpoint answered 410 Gone stays paused until a reload or restart; "
            "one an operator paused (hookrelay pause) parks its deliveries until resumed.",
            f"max by (hook_id) (hookrelay_hook_paused{{{HOOKS}}})",
            {0: ("active", "green"), 1: ("paused", "red")},
        ),
        graph(
            "Rate-limit wait by hook",
            "How long deliveries waited for a token of the hook's rate_limit, as measured "
            "per delivery; quantiles per hook over 5 m.",
            "s",
            *quantiles("job_hook_id_le:hookrelay_rate_limit_wait_seconds_bucket:rate5m"),
            width=THIRD,
        ),
        graph(
            "Rate limit by hook (adaptive: where it is now)",
            "Requests/s each hook's rate limit lets through, summed over replicas (each has "
            "its own): rate_limit.per_second, or where the adaptive rate limit has set it "
            "between its floor and that ceiling; and its decreases/s (429 or 503, latency).",
            "reqps",
            query(
                f"sum by (hook_id) (hookrelay_rate_limit_current_per_second{{{HOOKS}}})",
                "{{hook_id}}",
            ),
            query(
                rate("hookrelay_rate_limit_decreases_total", HOOKS, "hook_id, reason"),
                "decreases/s {{hook_id}} {{reason}}",
            ),
            width=THIRD,
        ),
        graph(
            "Retry backlog by hook and tier",
            "Retries waiting in the retry topics (counted by each replica for its partitions "
            "every admin.retry_backlog_interval_s); HookrelayRetryBacklogGrowing fires when "
            "one hook's keeps growing. hookrelay deliveries pending lists them.",
            "short",
            query(
                f"sum by (hook_id, tier) (hookrelay_retry_backlog{{{HOOKS}}})",
                "{{hook_id}} {{tier}}",
            ),
            width=THIRD,
        ),
        graph(
            "Pending per hook",
            "Deliveries queued in each hook's lane (bounded by delivery.lane_max_pending).",
            "short",
            query(f"sum by (hook_id) (hookrelay_lane_pending{{{HOOKS}}})", "{{hook_id}}"),
            width=THIRD,
        ),
        graph(
            "In flight",
            "Requests being sent per hook, and deliveries accepted but not yet settled per "
            "replica (bounded by delivery.max_in_flight).",
            "short",
            query(f"sum by (hook_id) (hookrelay_lane_in_flight{{{HOOKS}}})", "sending {{hook_id}}"),
            query(
                f"sum by (instance) (hookrelay_in_flight_deliveries{{{PROCESS}}})",
                "unsettled {{instance}}",
            ),
            width=THIRD,
        ),
    ]


def kafka() -> list[Panel]:
    return [
        graph(
            "Consumer lag by topic",
            "Log-end offset minus committed offset (as kafka-consumer-groups shows it). Retry "
            "topics lag by design: their records wait until due.",
            "short",
            query(f"sum by (topic) (job_topic:hookrelay_consumer_lag:sum{{{JOB}}})", "{{topic}}"),
        ),
        graph(
            "Records consumed/s by topic",
            "Records fetched from event and retry topics.",
            "reqps",
            query(
                f"sum by (topic) (job_topic:hookrelay_events_consumed:rate5m{{{JOB}}})",
                "{{topic}}",
            ),
        ),
        graph(
            "Events/s by name",
            "Valid events per event name, and whether any hook subscribed.",
            "reqps",
            query(
                rate("hookrelay_events_matched_total", PROCESS, "event, matched"),
                "{{event}} matched={{matched}}",
            ),
            width=THIRD,
        ),
        graph(
            "Invalid records/s by reason",
            "Records refused by the decoder (they go to the dead-letter topic).",
            "reqps",
            query(rate("hookrelay_events_invalid_total", PROCESS, "reason"), "{{reason}}"),
            width=THIRD,
        ),
        graph(
            "Consumer group",
            "Offset commits and failed commits per second, rebalances, work skipped after "
            "an assignment because the previous owner had settled it, partitions paused "
            "(backpressure, retry_not_due, starting), partitions held by an open "
            "transaction, and replicas whose fetching is paused.",
            "short",
            query(rate("hookrelay_offset_commits_total", PROCESS, "job"), "commits/s"),
            query(
                rate("hookrelay_offset_commit_failures_total", PROCESS, "job"), "failed commits/s"
            ),
            query(
                f"sum(increase(hookrelay_rebalances_total{{{PROCESS}}}[$__rate_interval]))",
                "rebalances",
            ),
            query(
                f"sum by (reason) (hookrelay_partitions_paused{{{PROCESS}}})",
                "partitions paused: {{reason}}",
            ),
            query(
                rate("hookrelay_settled_skipped_total", PROCESS, "unit"),
                "settled work skipped: {{unit}}/s",
            ),
            query(
                f"sum(hookrelay_partition_held_by_open_transaction{{{PROCESS}}})",
                "partitions held by an open transaction",
            ),
            query(f"sum(hookrelay_consumer_paused{{{PROCESS}}})", "replicas paused"),
            width=THIRD,
        ),
    ]


def process() -> list[Panel]:
    return [
        graph(
            "Resident memory",
            "Resident set size per replica (prometheus_client process collector).",
            "bytes",
            query(f"process_resident_memory_bytes{{{PROCESS}}}", "{{instance}}"),
            width=THIRD,
        ),
        graph(
            "CPU",
            "CPU time per second per replica; 100 % is one core.",
            "percentunit",
            query(
                f"rate(process_cpu_seconds_total{{{PROCESS}}}[$__rate_interval])", "{{instance}}"
            ),
            width=THIRD,
        ),
        graph(
            "Open file descriptors",
            "Open descriptors (sockets to endpoints and brokers included) against the limit.",
            "short",
            query(f"process_open_fds{{{PROCESS}}}", "open {{instance}}"),
            query(f"process_max_fds{{{PROCESS}}}", "limit {{instance}}"),
            width=THIRD,
        ),
    ]


def ingest() -> list[Panel]:
    latency = "sum by (source, le) (rate(hookrelay_ingest_request_duration_seconds_bucket{%s}[%s]))"
    return [
        graph(
            "Ingest requests/s by source and status",
            "Requests hookrelay ingest answered, per source (a Logto route, batch for "
            "POST /v1/events, unmatched for no route) and HTTP status: 204/200 written, 401 "
            "signature or token refused, 400/413/415 refused bodies, 503 not written.",
            "reqps",
            query(
                rate("hookrelay_ingest_requests_total", INGEST, "source, status"),
                "{{source}} {{status}}",
            ),
        ),
        graph(
            "Ingest answer latency by source",
            "From a request's headers to its answer (a 2xx includes Kafka's acknowledgement); "
            "quantiles per source. Logto gives up after 10 s.",
            "s",
            *[
                query(
                    f"histogram_quantile({q}, {latency % (INGEST, '$__rate_interval')})",
                    f"p{round(q * 100)} {{{{source}}}}",
                )
                for q in (0.5, 0.99)
            ],
        ),
        graph(
            "Events written/s by source",
            "Events acknowledged by Kafka (acks=all), per source and topic.",
            "reqps",
            query(
                rate("hookrelay_ingest_events_written_total", INGEST, "source, topic"),
                "{{source}} → {{topic}}",
            ),
            width=THIRD,
        ),
        graph(
            "Producer errors/s by error",
            "Writes that failed or timed out (answered 503; Logto does not resend them), by "
            "the client's exception name or timeout.",
            "reqps",
            query(rate("hookrelay_ingest_producer_errors_total", INGEST, "error"), "{{error}}"),
            width=THIRD,
        ),
        graph(
            "Connections closed by the guard/s",
            "Ingest connections the guard closed to stay within ingest.max_connections: "
            "evicted_idle (the longest idle, for a new one), over_limit (a new one, every "
            "connection busy).",
            "short",
            query(
                rate("hookrelay_ingest_connections_closed_total", INGEST, "reason"), "{{reason}}"
            ),
            width=THIRD,
        ),
    ]


SECTIONS = (
    ("Overview", overview),
    ("Deliveries", deliveries),
    ("Latency", latency),
    ("Retries and dead letters", retries),
    ("Lanes", lanes),
    ("Kafka", kafka),
    ("Process", process),
    # Last, so the daemon's panels keep their ids.
    ("Ingest", ingest),
)


def build() -> dash.Dashboard:
    """The whole dashboard builder (``.build()`` gives the model, :func:`render` the JSON)."""
    board = (
        dash.Dashboard("hookrelay")
        .uid(UID)
        .description(
            "hookrelay: Kafka identity events fanned out as signed webhooks. Generated by "
            "deploy/grafana/dashboard.py; alerts and runbook in deploy/prometheus/."
        )
        .tags(["hookrelay", "webhooks", "kafka"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-3h", "now")
        .timezone(common.TimeZoneBrowser)
        .variables(variables())
    )
    for title, panels in SECTIONS:
        board.with_row(dash.Row(title))
        for panel in panels():
            board.with_panel(panel)
    return board


def render() -> str:
    """The dashboard as the JSON text committed in hookrelay.json (sorted keys, newline)."""
    model = build().build()
    # Stable panel ids, in layout order, so links to a panel survive regeneration.
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return JSONEncoder(sort_keys=True, indent=2).encode(model) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if hookrelay.json is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is stale: run {Path(__file__).name} to regenerate it", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
