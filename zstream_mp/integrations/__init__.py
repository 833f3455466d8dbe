"""Binding a run into workers that frameworks start, not this process.

`zstream_mp.integrations.ray` (Ray tasks and actors, on this host and on other nodes) and
`zstream_mp.integrations.dask` (`distributed` workers, local or CLI-started). Both import
without their framework installed; using one without it raises `MissingExtraError`, an
`ImportError` that names the extra to install.
"""

from __future__ import annotations

from zstream_mp.errors import MissingExtraError

__all__ = ["MissingExtraError"]
