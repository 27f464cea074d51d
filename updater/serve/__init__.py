"""The long-running side: the daemon's schedule, the heartbeat, the HTTP API and metrics."""
