"""updater: keeps Docker containers and swarm services on the newest image for their tag."""

from __future__ import annotations

__version__ = "0.1.0"
