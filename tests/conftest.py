"""Fixtures more than one test file uses. A fixture only one file needs stays in that file."""
import pytest


@pytest.fixture
def close_figures():
    """Close every matplotlib figure after the test. Not autouse here: a file opts in with
    ``pytestmark = pytest.mark.usefixtures("close_figures")``, so files whose module-scoped fixtures hold a
    figure (test_widgets' player) keep it."""
    yield
    import matplotlib.pyplot as plt  # here, not at the top: each test file picks its backend first

    plt.close("all")
