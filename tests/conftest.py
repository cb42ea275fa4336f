"""Suite-wide settings.

Hypothesis: under CI (the `CI` environment variable, which `.ci/run`'s runner sets) property
tests are derandomized, so a landing never depends on the luck of a random seed; on a
developer's machine they keep exploring new examples on every run.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
