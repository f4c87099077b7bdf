"""A pytest plugin that tools/mutation_check.py loads into every pytest session mutmut starts.

Each mutant is a pytest session of its own, and the captioning and CycleGAN tests generate their
weights (2.2 GB) in session-scoped temporary folders. pytest's retention policies keep those: the
``none`` policy removes each test's own ``tmp_path`` only, and ``failed`` keeps everything of a
session with a failure, which is what a killed mutant is. So a mutation run would leave 2.2 GB per
mutant; this removes the session's whole temporary folder when the session ends.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _remove_the_sessions_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # set up first, so torn down last: after the fixtures that serve or load from the folder
    yield
    shutil.rmtree(tmp_path_factory.getbasetemp(), ignore_errors=True)
