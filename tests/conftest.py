"""Shared pytest configuration for the hookrelay test suite."""

pytest_plugins = ["tests.kafka_broker"]
