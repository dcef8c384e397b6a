"""Hypothesis profiles: the property tests reproducible in the suite, longer and random apart.

A pytest plugin (``tests/conftest.py`` names it in ``pytest_plugins``), loaded
before any test module, so every ``@settings`` a test module makes inherits
the active profile:

* ``suite`` (the default, ``nox -s tests``): derandomized — the same examples
  on every run and every machine, so a failure in CI fails again locally.
* ``matrix`` (``nox -s matrix`` passes ``--hypothesis-profile=matrix``):
  random, and each property test runs ``TXSETUP_PROPERTY_SCALE`` (default 10)
  times as many examples as its own ``max_examples`` says.

Neither has a deadline or the ``too_slow`` health check: both measure the
machine, and no test may fail because it is slow or busy.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

SUITE = "suite"
MATRIX = "matrix"
_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], "print_blob": True}

settings.register_profile(SUITE, derandomize=True, **_COMMON)  # type: ignore[arg-type]
settings.register_profile(MATRIX, derandomize=False, **_COMMON)  # type: ignore[arg-type]
settings.load_profile(SUITE)


def scale() -> int:
    """How many times its own ``max_examples`` each property test runs in ``matrix``."""
    return max(1, int(os.environ.get("TXSETUP_PROPERTY_SCALE", "10")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``matrix``, multiply every property test's ``max_examples`` by :func:`scale`."""
    if config.getoption("hypothesis_profile", None) != MATRIX:
        return
    done: set[int] = set()  # parametrized items share one function: scale it once
    for item in items:
        test = getattr(item, "obj", None)
        if not getattr(test, "is_hypothesis_test", False) or id(test) in done:
            continue
        done.add(id(test))
        own: settings = test._hypothesis_internal_use_settings  # type: ignore[union-attr]
        longer = settings(own, max_examples=own.max_examples * scale())
        test._hypothesis_internal_use_settings = longer  # type: ignore[union-attr]
