"""pytest plugin (-p thirdparty_ocular): the whole pytest session under
Ocular, for `coverage run -m pytest` in tests/thirdparty.py."""

import warnings

import ocular


def pytest_configure(config):
    ocular.start_tracing(deinstrument_threshold=0, perfetto=False)


def pytest_unconfigure(config):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an Ocular warning fails the run
        profile = ocular.stop_tracing()
    if profile is None or profile.failure or profile.lost_frames:
        raise SystemExit(f"Ocular under coverage: failure {profile and profile.failure}, "
                         f"lost frames {profile and profile.lost_frames}")
