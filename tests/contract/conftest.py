"""Fixtures of the contract suite; the targets themselves live in `helpers.contract_targets`.

Every case runs against every target through the `target_name`/`target` fixtures. A
target that cannot run is skipped with its reason, repeated in the terminal summary.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import zenml_peer as zpeer
from helpers.contract_targets import _SUMMARY, TARGETS, Registry, Target


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    reg = Registry()
    try:
        yield reg
    finally:
        reg.close()


@pytest.fixture(params=TARGETS)
def target_name(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if name == "zenml":
        request.applymarker(pytest.mark.zenml)
    if name == "ours-redis":
        request.applymarker(pytest.mark.redis)
    return name


@pytest.fixture
def target(registry: Registry, target_name: str) -> Target:
    return registry.main(target_name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("target_name") if callspec else None
        if name == "zenml":
            item.add_marker(pytest.mark.zenml)
        elif name == "ours-redis":
            item.add_marker(pytest.mark.redis)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = list(_SUMMARY)
    for reason in zpeer.skip_reasons():
        if not any(reason in line for line in lines):
            lines.append(f"[zenml] {reason}")
    if lines:
        terminalreporter.section("contract targets that could not run", sep="!", yellow=True)
        for line in lines:
            terminalreporter.write_line(f"SKIPPED TARGET: {line}", yellow=True, bold=True)
