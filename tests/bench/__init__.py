"""hookrelay's benchmark suite (issue 4): ``make bench``, or ``python -m tests.bench``.

Not part of ``make test``: nothing here is collected by pytest. One run starts its own
Kafka broker, a fast receiver in its own process, and then measures, on this machine:

- the receiver's own ceiling (a raw load generator), so it is shown not to be the limit;
- the baseline: a bare aiohttp client POSTing the daemon's exact pre-signed requests to the
  same receiver at the same concurrency, no Kafka (1 path and 10 paths);
- the daemon (``python -m hookrelay run`` as a subprocess) draining a backlog with 1 hook and
  10 hooks: deliveries/s, ratio to the baseline, CPU seconds per 1,000 deliveries;
- latency (produce → arrival) at 50 % of the measured maximum, and RSS growth in that run;
- isolation: 10 hooks, one never answers: the nine others' throughput and p99;
- rate-limit accuracy (50/s and 500/s), memory with a large backlog and a dead endpoint,
  and start-up time to ``/readyz``.

It prints a table and writes ``bench-results.json``. ``--quick`` (``make bench QUICK=1``)
or ``--scale`` / ``BENCH_SCALE`` shrink every size; ``--help`` lists the rest.

Modules: ``cli`` (orchestration), ``scenarios``, ``harness`` (shared context, daemon runs),
``receiver``, ``loadgen``, ``baseline``, ``kafka``, ``daemon``, ``procstat``, ``stats``,
``sizes``, ``report``, ``machine``, ``profiling``, ``events``.
"""
