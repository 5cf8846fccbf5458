"""Files in the run directory (<data_dir>/run) that one process writes and another reads, besides
the endpoint announcements (transport.py)."""

RESTARTS_FILE = "restarts.json"     # the supervisor's restarts per process kind; the observer reads it for /metrics
ALERTS_FILE = "alerts.json"         # the alerts actor's outbox counts (sent, failed); the observer reads it for /metrics
