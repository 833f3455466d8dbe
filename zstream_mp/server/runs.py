"""Which runs exist and which have ended: a dev server has no run database, so this is it."""

from __future__ import annotations

from uuid import UUID


class RunRegistry:
    """Runs created, published to or ended through this server, in the order first seen.

    With ``strict`` only created runs are known (others get 404); without it any run id is
    accepted, and the registry still remembers which ones it has seen so they can be listed.
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self._created: set[UUID] = set()
        self._ended: set[UUID] = set()
        self._seen: dict[UUID, None] = {}  # insertion-ordered set

    def create(self, run_id: UUID) -> bool:
        """Register a run; False when it already existed."""
        self._seen[run_id] = None
        if run_id in self._created:
            return False
        self._created.add(run_id)
        return True

    def touch(self, run_id: UUID) -> None:
        """Remember a run that events were published to."""
        self._seen[run_id] = None

    def known(self, run_id: UUID) -> bool:
        return not self.strict or run_id in self._created

    def seen(self, run_id: UUID) -> bool:
        """Created, published to or ended through this server process."""
        return run_id in self._seen

    def all(self) -> list[UUID]:
        """Every run seen, oldest first."""
        return list(self._seen)

    def ended(self, run_id: UUID) -> bool:
        return run_id in self._ended

    def mark_ended(self, run_id: UUID) -> bool:
        """Mark a run ended; False when it already was."""
        self._seen[run_id] = None
        if run_id in self._ended:
            return False
        self._ended.add(run_id)
        return True


def not_found_message(run_id: UUID) -> str:
    """ZenML's 404 text: `str(KeyError(...))`, quotes included."""
    return str(
        KeyError(
            f"Unable to get pipeline run with ID '{run_id}': No pipeline run with this ID found"
        )
    )
