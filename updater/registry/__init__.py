"""The registry side: the HTTP client, its authentication and where credentials come from.
It knows nothing of Docker engines."""
