"""Everything that talks to Kafka: client options, the consumer (``source``) with its group
membership and offset tracking, the owned topics and retry tiers, the writer of retry and
dead-letter records and their formats.
"""
