"""Release tests run in environments of their own (namespaces rel-staging / rel-production on
lab-primary), so the baseline that other tests rely on stays untouched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from greenlight_lab.state import LabState

from .support import release_environments


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The release profiles (rel-staging / rel-production), selected for the module."""
    with release_environments(lab, tmp_path_factory.mktemp("release-envs")) as directory:
        yield directory
