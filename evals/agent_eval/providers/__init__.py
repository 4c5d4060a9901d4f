"""The provider paths a scenario can take, by the name its `provider:` field gives."""

from __future__ import annotations

from agent_eval.providers.aws_connect import AwsConnectCall
from agent_eval.providers.base import ProviderCall
from agent_eval.providers.generic_http import GenericHttpCall
from agent_eval.providers.generic_stream import GenericStreamCall
from agent_eval.providers.twilio import TwilioCall
from agent_eval.providers.twilio_relay import TwilioRelayCall
from agent_eval.providers.vonage import VonageCall

PATHS: dict[str, type[ProviderCall]] = {
    "generic-http": GenericHttpCall,
    "generic-http-stream": GenericStreamCall,
    "twilio": TwilioCall,
    "twilio-relay": TwilioRelayCall,
    "vonage": VonageCall,
    "aws-connect": AwsConnectCall,
}
