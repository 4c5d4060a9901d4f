"""Amazon Connect's API for the Connect adapter: the boto3 client, starting and stopping
contacts, its errors, and the adapter's configuration check.

They live here, not in `aws_connect.py`, so the adapter keeps verify + parse + render and stays
under the 350-line rule for provider modules. boto3 is imported here only, when the client is
first built (in a thread: botocore loads its models), and every Connect API call runs in a
thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from realtime_gateway.vocabulary import (
    ConfigReport,
    ProviderConfigError,
    ProviderError,
    unset_variables,
)
from shared.logging import scrub_text
from shared.phone import parse_e164

if TYPE_CHECKING:
    from botocore.client import BaseClient

    from realtime_gateway.config import GatewaySettings

log = logging.getLogger(__name__)

BOTO_CONNECT_TIMEOUT_S = 2.0
BOTO_READ_TIMEOUT_S = 5.0
BOTO_MAX_ATTEMPTS = 3
# Connect API errors that mean "what you sent is wrong", not "Connect failed".
_CLIENT_ERRORS = frozenset(
    {
        "InvalidParameterException",
        "InvalidRequestException",
        "DestinationNotAllowedException",
        "ResourceNotFoundException",
        "OutboundContactNotPermittedException",
    }
)


class ConnectRest:
    def __init__(self, settings: GatewaySettings, client: BaseClient | None = None) -> None:
        self.settings = settings
        self._client = client
        self._client_lock = asyncio.Lock()

    async def connect_client(self) -> BaseClient:
        """The boto3 Connect client, built once (in a thread: botocore loads its models)."""
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    self._client = await asyncio.to_thread(self._build_client)
        return self._client

    def _build_client(self) -> BaseClient:
        s = self.settings
        if not s.aws_region:
            raise ProviderConfigError("AWS_REGION is required")
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=BOTO_CONNECT_TIMEOUT_S,
            read_timeout=BOTO_READ_TIMEOUT_S,
            retries={"total_max_attempts": BOTO_MAX_ATTEMPTS, "mode": "standard"},
        )
        kwargs: dict[str, Any] = {"region_name": s.aws_region, "config": config}
        if s.aws_access_key_id and s.aws_secret_access_key:
            kwargs["aws_access_key_id"] = s.aws_access_key_id
            kwargs["aws_secret_access_key"] = s.aws_secret_access_key.get_secret_value()
        client: BaseClient = boto3.session.Session().client("connect", **kwargs)
        return client

    def missing(self, has_signing_secret: bool) -> list[str]:
        """Unset variables; `has_signing_secret`: whether the forwarder's secret resolved."""
        s = self.settings
        missing = unset_variables(
            [
                ("AWS_REGION", s.aws_region),
                ("AWS_CONNECT_INSTANCE_ID", s.aws_connect_instance_id),
                ("AWS_CONNECT_CONTACT_FLOW_ID", s.aws_connect_contact_flow_id),
            ]
        )
        if not s.aws_connect_phone_number and not s.aws_connect_queue_id:
            missing.append("AWS_CONNECT_PHONE_NUMBER (or AWS_CONNECT_QUEUE_ID)")
        if not has_signing_secret:
            missing.append("GENERIC_HTTP_SECRET (signs the forwarder Lambda's requests)")
        return missing

    async def validate(self, has_signing_secret: bool, check_reachability: bool) -> ConfigReport:
        missing = self.missing(has_signing_secret)
        problems: list[str] = []
        s = self.settings
        if bool(s.aws_access_key_id) != bool(s.aws_secret_access_key):
            problems.append(
                "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither "
                "(then the default AWS credential chain is used, e.g. an ECS task role)"
            )
        if s.aws_connect_phone_number:
            try:
                parse_e164(s.aws_connect_phone_number, "AWS_CONNECT_PHONE_NUMBER", exact=False)
            except ValueError as exc:
                problems.append(str(exc))
        reach = self._describe_instance if check_reachability else None
        return await ConfigReport.of(missing, problems, reach, "Amazon Connect", describe)

    async def _describe_instance(self) -> None:
        client = await self.connect_client()
        instance = self.settings.aws_connect_instance_id
        await asyncio.to_thread(client.describe_instance, InstanceId=instance)

    async def start_contact(
        self, destination: str, source: str | None, attributes: dict[str, str], client_token: str
    ) -> str:
        """`StartOutboundVoiceContact` through the configured flow; the new contact's id."""
        s = self.settings
        kwargs: dict[str, Any] = {
            "DestinationPhoneNumber": destination,
            "ContactFlowId": s.aws_connect_contact_flow_id,
            "InstanceId": s.aws_connect_instance_id,
            "Attributes": attributes,
            "ClientToken": client_token,
        }
        if source:
            kwargs["SourcePhoneNumber"] = dialable(source, "from_number")
        if s.aws_connect_queue_id:
            kwargs["QueueId"] = s.aws_connect_queue_id
        client = await self.connect_client()
        try:
            response = await asyncio.to_thread(client.start_outbound_voice_contact, **kwargs)
        except Exception as exc:
            raise provider_error(exc, "Amazon Connect refused the call") from None
        return str(response["ContactId"])

    async def stop_contact(self, call_id: str) -> None:
        """`StopContact`; a contact that is already over is not an error."""
        client = await self.connect_client()
        try:
            await asyncio.to_thread(
                client.stop_contact,
                ContactId=call_id,
                InstanceId=self.settings.aws_connect_instance_id,
            )
        except Exception as exc:
            if error_code(exc) == "ContactNotFoundException":
                return  # already over
            raise provider_error(exc, "Amazon Connect could not end the call") from None


def dialable(number: str, field: str) -> str:
    """Connect does not check numbers itself: a valid international number, in E.164."""
    return parse_e164(number, field, exact=False)


def error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def describe(exc: Exception) -> str:
    code = error_code(exc)
    if code is None:
        return type(exc).__name__
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message") or "")[:200]
    return scrub_text(f"{code}: {message}".rstrip(": "))


def provider_error(exc: Exception, what: str) -> ProviderError:
    code = error_code(exc)
    status = 400 if code in _CLIENT_ERRORS else 502
    return ProviderError(f"{what}: {describe(exc)}", status=status)
