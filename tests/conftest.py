from __future__ import annotations

from collections.abc import Iterator

import pytest

from mcptrace.testing import RunningProcess, running_server, running_upstream


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    with running_upstream(tmp_path_factory.mktemp("upstream")) as proc:
        yield proc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: RunningProcess) -> Iterator[RunningProcess]:
    """One real `mcptrace serve` per test module, in front of a real upstream."""
    with running_server(tmp_path_factory.mktemp("server"), "--upstream-url", upstream.base_url) as proc:
        yield proc
