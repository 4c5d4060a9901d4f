"""The provider paths a scenario can take, by the name its `provider:` field gives."""

from __future__ import annotations

from agent_eval.providers.base import ProviderCall
from agent_eval.providers.generic_http import GenericHttpCall
from agent_eval.providers.generic_stream import GenericStreamCall

PATHS: dict[str, type[ProviderCall]] = {
    "generic-http": GenericHttpCall,
    "generic-http-stream": GenericStreamCall,
}
