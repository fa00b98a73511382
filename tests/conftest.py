from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

from mcptrace.testing import RunningProcess, running_server, running_upstream

# Property tests check what is answered, not how fast: on a machine shared with servers under load
# one example can take longer than hypothesis' default 200 ms deadline without anything being wrong.
settings.register_profile("mcptrace", deadline=None)
settings.load_profile("mcptrace")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    with running_upstream(tmp_path_factory.mktemp("upstream")) as proc:
        yield proc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: RunningProcess) -> Iterator[RunningProcess]:
    """One real `mcptrace serve` per test module, in front of a real upstream."""
    with running_server(tmp_path_factory.mktemp("server"), "--upstream-url", upstream.base_url) as proc:
        yield proc
