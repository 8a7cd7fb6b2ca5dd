"""What lets people watch and steer the daemon: logs, metrics, the admin listener, systemd
notifications, the recent-attempts history and the reload plan. Knows nothing of Kafka or
of delivery: the supervisor hands the admin listener its callbacks.
"""
