"""Fixtures of the course's tests: the hidden inputs of each test.

Every test takes ``rng``: a generator seeded from $TQREF_GRADE_SEED (when
set) and the test's name, else from a fresh seed per run.  The seed is
printed at the end of the run; set the variable to repeat the inputs of a
failing run:  TQREF_GRADE_SEED=1234 python -m pytest tests/course
"""

import pytest

from tqref.course import checks


@pytest.fixture
def rng(request):
    return checks.rng_for(request.node.nodeid)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"course tests: hidden inputs from {checks.SEED_ENV}={checks.grade_seed()} "
                                f"(set it to repeat them)")
