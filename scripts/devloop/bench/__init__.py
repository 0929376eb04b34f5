"""Measuring the service: `devloop bench` (one server under load), `devloop bench-compare`
(several side by side, with the memory-bandwidth ceiling), `devloop bench-reload` (the gateway's
live update under load), `devloop membw`, and `devloop dashboard-check` (the dashboard's series
against a real /metrics)."""
