"""From a matched event to a settled delivery: routing, per-hook lanes (dispatcher), the
HTTP sender, token buckets and the circuit breaker.
"""
