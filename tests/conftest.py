"""Shared pytest configuration.

Hypothesis runs derandomized with a small, fixed number of examples and no
deadline, so the suite is reproducible and fast on a 2-core CI machine (the
first call of a test pays for imports and thread start-up, which a deadline
would misread as slowness). NHOOD_HYPOTHESIS_PROFILE=thorough draws more.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, derandomize=True, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=40, **_COMMON)
settings.register_profile("thorough", max_examples=300, **_COMMON)
settings.load_profile(os.environ.get("NHOOD_HYPOTHESIS_PROFILE", "ci"))
