"""What the engine reports, as plain values: the adapter (`engine`) makes them from the API's
documents, and the rest of the updater reads only these. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ContainerSnapshot:
    """What the updater needs to know about one container, as the engine listed it."""

    id: str
    name: str
    image: str
    image_id: str
    state: str
    labels: Mapping[str, str] = field(default_factory=dict)
    repo_digests: tuple[str, ...] = ()
    # On the containerd image store an image's ID is the manifest (or index) digest it was
    # pulled as; an image whose tag moved to another has no names left to say so. Then: its ID.
    content_digest: str | None = None
