"""Fixtures shared by the damaged-input suites."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def nd_log(caplog):
    """Capture the (non-propagating) neurodecode logger."""
    lg = logging.getLogger("neurodecode")
    lg.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        lg.removeHandler(caplog.handler)
