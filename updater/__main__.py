"""`python -m updater` is the `updater` command."""

from __future__ import annotations

from updater.cli import main

raise SystemExit(main())
