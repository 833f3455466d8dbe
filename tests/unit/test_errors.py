"""`errors`: the one map from an HTTP answer's status to the error the clients raise."""

from __future__ import annotations

import pytest

from zstream_mp import errors


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, errors.InvalidRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.RunNotFoundError),
        (422, errors.InvalidRequestError),
        (501, errors.StreamingDisabledError),
        (500, errors.ServerUnavailableError),
        (503, errors.ServerUnavailableError),
        (409, errors.SubscribeError),
        (302, errors.SubscribeError),
    ],
)
def test_error_for_status(status: int, error: type[errors.SubscribeError]) -> None:
    assert errors.error_for_status(status) is error


def test_the_packages_own_errors_stay_catchable_as_before() -> None:
    assert issubclass(errors.Reentered, RuntimeError)
    assert issubclass(errors.ServeFailed, RuntimeError)
    assert issubclass(errors.BrokerFullError, errors.BrokerConnectionError)
