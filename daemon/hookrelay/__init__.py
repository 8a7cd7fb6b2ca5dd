"""hookrelay: identity events from Kafka, fanned out as Logto-compatible signed webhooks."""

__version__ = "0.1.0"
