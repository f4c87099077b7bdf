"""Fixtures of the command-line tests: the generated weights of the batch jobs, once a session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_files import BatchEnv, make_batch_env  # noqa: E402


@pytest.fixture(scope="session")
def batch_env(weight_server, tmp_path_factory) -> BatchEnv:
    """squeezenet1_1, cyclegan and neuraltalk2 with generated weights, fetched into a TORCH_HOME."""
    return make_batch_env(weight_server, tmp_path_factory.mktemp("batch"))
