"""pytest plugin for the third-party suites (tests/thirdparty.py): the same
hypothesis examples in every configuration (derandomized, no example
database) and no deadline, which would turn Ocular's slowdown into failures."""

import pytest


@pytest.hookimpl(trylast=True)  # after the project's own conftest has loaded its profile
def pytest_configure(config):
    from hypothesis import HealthCheck, settings

    settings.register_profile("ocular-thirdparty", derandomize=True, database=None, deadline=None,
                              suppress_health_check=list(HealthCheck))
    settings.load_profile("ocular-thirdparty")
