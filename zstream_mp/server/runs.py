"""Which runs exist and which have ended: a dev server has no run database, so this is it."""

from __future__ import annotations

from uuid import UUID


class RunRegistry:
    """Runs created or ended through the API; with `strict` only created runs are known."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self._created: set[UUID] = set()
        self._ended: set[UUID] = set()

    def create(self, run_id: UUID) -> bool:
        """Register a run; False when it already existed."""
        if run_id in self._created:
            return False
        self._created.add(run_id)
        return True

    def known(self, run_id: UUID) -> bool:
        return not self.strict or run_id in self._created

    def ended(self, run_id: UUID) -> bool:
        return run_id in self._ended

    def mark_ended(self, run_id: UUID) -> bool:
        """Mark a run ended; False when it already was."""
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
