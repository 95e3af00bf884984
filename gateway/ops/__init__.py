"""Operating the gateway: admin API and dashboard, metrics, logs, explain, the demo, process tuning."""
