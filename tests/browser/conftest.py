import pytest


def pytest_collection_modifyitems(items):  # noqa: ANN001
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)
