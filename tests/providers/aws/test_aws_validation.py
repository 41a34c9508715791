"""Clear errors, not stack traces: credentials, region, subnet, flavor, security groups.

moto accepts any credentials unless its IAM checking is switched on; ``iam_auth`` turns it
on (``/moto-api/reset-auth``) after creating one real IAM user and key, so a wrong key is
rejected the way AWS rejects it (AuthFailure / SignatureDoesNotMatch).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
import requests

from core.errors import AuthenticationFailed, InvalidInput, NotFound
from core.models import InstanceInfo
from providers.aws.provider import AwsProvider
from providers.base import ActionContext

VM = InstanceInfo.model_validate(
    {
        "id": "vm-1",
        "name": "web01",
        "num_cpu": 2,
        "memory_mb": 2048,
        "devices": {"nics": [{"network_name": "lan", "mac_address": "52:54:00:00:00:01"}]},
    }
)


@pytest.fixture
def iam_user(conn_info: dict[str, Any], moto_url: str) -> Iterator[dict[str, str]]:
    """An IAM user allowed everything; moto checks every later request's signature."""
    # These four IAM calls are the only unauthenticated ones moto will take.
    requests.post(f"{moto_url}/moto-api/reset-auth", data=b"4", timeout=30).raise_for_status()
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=moto_url,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="sterna")
        key = iam.create_access_key(UserName="sterna")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        arn = iam.create_policy(PolicyName="all", PolicyDocument=json.dumps(policy))["Policy"]["Arn"]
        iam.attach_user_policy(UserName="sterna", PolicyArn=arn)
        yield {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
    finally:
        requests.post(f"{moto_url}/moto-api/reset-auth", data=b"inf", timeout=30).raise_for_status()


def test_bad_credentials_are_authentication_failed(
    conn_info: dict[str, Any], iam_user: dict[str, str]
) -> None:
    AwsProvider({**conn_info, **iam_user}).validate_connection()  # the real key works

    wrong_secret = "WRONG-secret-value-1234567890"
    with pytest.raises(AuthenticationFailed, match="rejected the credentials") as caught:
        AwsProvider({**conn_info, **iam_user, "secret_access_key": wrong_secret}).validate_connection()
    assert wrong_secret not in str(caught.value)
    assert iam_user["secret_access_key"] not in str(caught.value)
    assert caught.value.__cause__ is None  # no botocore traceback chained in

    with pytest.raises(AuthenticationFailed, match="rejected the credentials"):
        AwsProvider({**conn_info, "access_key_id": "AKIDNOSUCHKEY0000000"}).validate_connection()


def test_unknown_region_is_invalid_input(conn_info: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="unknown AWS region 'xx-nowhere-9'"):
        AwsProvider({**conn_info, "region": "xx-nowhere-9"}).validate_connection()
    AwsProvider({**conn_info, "region": "eu-west-1"}).validate_connection()


def test_incomplete_connection_info_is_invalid_input(conn_info: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="'region'"):
        AwsProvider({k: v for k, v in conn_info.items() if k != "region"}).validate_connection()
    with pytest.raises(InvalidInput, match="both 'access_key_id' and 'secret_access_key'"):
        AwsProvider({**conn_info, "secret_access_key": ""}).validate_connection()


def test_role_arn_is_assumed(conn_info: dict[str, Any], subnet: dict[str, Any]) -> None:
    # moto's STS hands out a session for any role; real AWS also checks the trust policy.
    info = {**conn_info, "role_arn": "arn:aws:iam::123456789012:role/sterna-migrations", "external_id": "x-1"}
    provider = AwsProvider(info)
    provider.validate_connection()
    assert subnet["SubnetId"] in [n.id for n in provider.list_networks({})]


def test_missing_subnet_is_not_found(provider: AwsProvider) -> None:
    env, action = {"flavor_name": "t3.small"}, ActionContext(network_map={"lan": "subnet-0000000000deadbee"})
    with pytest.raises(NotFound, match=r"subnet 'subnet-0000000000deadbee' .*network 'lan'"):
        provider.validate_destination(env, VM, action)


def test_other_destination_mistakes_are_named(provider: AwsProvider, subnet: dict[str, Any]) -> None:
    good, lan = {"flavor_name": "t3.small"}, ActionContext(network_map={"lan": subnet["SubnetId"]})
    provider.validate_destination(good, VM, lan)

    with pytest.raises(InvalidInput, match="network 'lan' of instance 'web01' has no entry in network_map"):
        provider.validate_destination(good, VM, replace(lan, network_map={"other": subnet["SubnetId"]}))
    with pytest.raises(InvalidInput, match=r"instance type 'x9\.huge' is not offered"):
        provider.validate_destination({**good, "flavor_name": "x9.huge"}, VM, lan)
    with pytest.raises(InvalidInput, match="can't host 'web01': it does not boot UEFI"):
        uefi = VM.model_copy(update={"firmware_type": "EFI"})
        provider.validate_destination({**good, "flavor_name": "t2.micro"}, uefi, lan)
    bad_group = {"lan": {"subnet_id": subnet["SubnetId"], "security_group_ids": ["sg-0000000000deadbee"]}}
    with pytest.raises(NotFound, match=r"security group.*sg-0000000000deadbee"):
        provider.validate_destination(good, VM, replace(lan, network_map=bad_group))
    with pytest.raises(InvalidInput, match="unknown EBS volume type 'fast'"):
        provider.validate_destination(good, VM, replace(lan, storage_mappings={"default": "fast"}))
    with pytest.raises(InvalidInput, match="no x86_64 instance type has 4096 vCPUs"):
        provider.validate_destination({**good, "flavor_name": None}, VM.model_copy(update={"num_cpu": 4096}), lan)
