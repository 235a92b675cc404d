from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from issuer import Issuer  # noqa: E402


@pytest.fixture
def issuer():
    server = Issuer().start()
    yield server
    server.stop()
