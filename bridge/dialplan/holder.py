"""The dial plan in force, and the only way to replace it: build, check, then swap whole.

Theory of operation. The holder keeps one current :class:`Router`. A reload first builds a
*candidate* from the file, beside the current plan, which nothing has touched yet; only a
candidate that passed every check can be swapped in, and swapping is one reference assignment.
A failed load leaves the current plan as it was and drops any older candidate, so a later
``swap()`` can never install a plan other than the last one checked. Calls that already hold a
:class:`~bridge.dialplan.router.RouteDecision` keep it: decisions are immutable and belong to
the router that made them, not to the holder.

The holder does no I/O beyond reading the plan file and keeps no clock; the engine wires it to
SIGHUP and to ``POST /api/v1/admin/dialplan/reload`` and records each :class:`ReloadOutcome`
as an audit event.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bridge.dialplan.diff import diff_routers, format_changes
from bridge.dialplan.loader import LoadResult, Problem, load_file
from bridge.dialplan.router import Router


class DialPlanError(Exception):
    """The plan cannot be put into force; ``problems`` say why, as ``FILE:LINE: message``."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadOutcome:
    """What an audit event of a reload needs to say."""

    path: str
    ok: bool
    generation: int
    """Generation in force after the reload (unchanged when it failed)."""
    sha256: str
    problems: tuple[str, ...]
    changes: tuple[str, ...]
    """Routing differences against the plan it replaced, as ``bridge dialplan diff`` prints."""


class DialPlanHolder:
    def __init__(self, result: LoadResult) -> None:
        if result.router is None:
            raise DialPlanError(result.problems)
        self._current = result
        self._candidate: LoadResult | None = None
        self.generation = 1

    @classmethod
    def from_file(cls, path: str | Path) -> DialPlanHolder:
        """Start-up: the plan must be valid, or the service does not start."""
        return cls(load_file(path))

    @property
    def router(self) -> Router:
        """The router in force; ask it once per call and keep the decision."""
        router = self._current.router
        assert router is not None
        return router

    @property
    def path(self) -> str:
        return self._current.filename

    @property
    def sha256(self) -> str:
        return self._current.sha256

    @property
    def candidate(self) -> LoadResult | None:
        return self._candidate

    def load_candidate(self, path: str | Path | None = None) -> LoadResult:
        """Build and check the plan at ``path`` (default: the current file), not in force yet."""
        result = load_file(self.path if path is None else path)
        self._candidate = result if result.ok else None
        return result

    def swap(self) -> Router:
        """Put the last checked candidate in force, whole."""
        if self._candidate is None:
            raise LookupError("no checked dial plan waiting: load_candidate() first")
        self._current, self._candidate = self._candidate, None
        self.generation += 1
        return self.router

    def reload(self, path: str | Path | None = None) -> ReloadOutcome:
        """``load_candidate`` then ``swap`` when it passed: what SIGHUP and the API do."""
        before = self.router
        result = self.load_candidate(path)
        if not result.ok:
            return ReloadOutcome(
                path=result.filename,
                ok=False,
                generation=self.generation,
                sha256=result.sha256,
                problems=tuple(str(p) for p in result.problems),
                changes=(),
            )
        after = self.swap()
        return ReloadOutcome(
            path=result.filename,
            ok=True,
            generation=self.generation,
            sha256=result.sha256,
            problems=(),
            changes=tuple(format_changes(diff_routers(before, after))),
        )
