"""Alerts: budget thresholds, forecasts and anomalies, delivered to webhooks from a durable outbox."""
