"""hookrelay: consume identity events from Kafka, fan them out as Logto-compatible signed webhooks."""

__version__ = "0.1.0"
