"""The botocore -> core.errors mapping, on the error shapes botocore itself builds."""

from __future__ import annotations

from botocore.exceptions import ClientError, EndpointConnectionError

from core.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    InvalidInput,
    NotFound,
    ProviderError,
    ProviderTransient,
)
from providers.aws.errors import translate
from providers.aws.session import AwsConnection


def client_error(code: str, message: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


def test_codes_map_to_the_error_tree() -> None:
    cases = {
        "AuthFailure": AuthenticationFailed,
        "UnauthorizedOperation": AuthenticationFailed,
        "InvalidSubnetID.NotFound": NotFound,
        "ResourceNotFoundException": NotFound,
        "InvalidParameterValue": InvalidInput,
        "InvalidInstanceID.Malformed": InvalidInput,
        "RequestLimitExceeded": ProviderTransient,
        "InsufficientInstanceCapacity": ProviderTransient,
        "SomethingNew": ProviderError,
    }
    for code, kind in cases.items():
        err = translate(client_error(code, "details"), "doing x")
        assert type(err) is kind, code
        assert err.message.startswith("doing x failed")
    assert type(translate(client_error("Weird", "boom", 503), "x")) is ProviderTransient
    assert type(translate(EndpointConnectionError(endpoint_url="https://ec2.x"), "x")) is ConnectionFailed


def test_secrets_echoed_by_a_server_are_redacted() -> None:
    conn = AwsConnection.from_info(
        {
            "region": "r",
            "access_key_id": "AKID",
            "secret_access_key": "topsecretvalue",
            "session_token": "tok-123456",
        }
    )
    err = translate(
        client_error("SignatureDoesNotMatch", "sig for topsecretvalue / tok-123456"), "x", conn.secrets
    )
    assert "topsecretvalue" not in err.message
    assert "tok-123456" not in err.message
    assert "topsecretvalue" not in repr(conn)
