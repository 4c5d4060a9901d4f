"""Which driver serves which provider, imported only when first used.

A provider's SDK (twilio, vonage, boto3) is imported by its driver module, so a gateway running
generic-http never pays for them at start-up. A driver that cannot be imported (module missing,
SDK missing) makes only that provider unavailable, with a clear message; the others keep working.
"""

from __future__ import annotations

import asyncio
import importlib
import logging

from realtime_gateway.config import PROVIDERS
from realtime_gateway.drivers.base import BaseDriver, DriverDeps

log = logging.getLogger(__name__)

DRIVERS: dict[str, str] = {
    "twilio": "realtime_gateway.drivers.twilio:TwilioDriver",
    "vonage": "realtime_gateway.drivers.vonage:VonageDriver",
    "aws-connect": "realtime_gateway.drivers.aws_connect:AwsConnectDriver",
    "generic-http": "realtime_gateway.drivers.generic_http:GenericHttpDriver",
}
assert set(DRIVERS) == set(PROVIDERS)


class UnknownProvider(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown voice provider {name!r}; known: {', '.join(DRIVERS)}")
        self.name = name


class DriverUnavailable(RuntimeError):
    """The provider is known but its driver could not be loaded or initialised."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"voice provider {name!r} is not available: {reason}")
        self.name = name
        self.reason = reason


def load_driver_class(name: str) -> type[BaseDriver]:
    if name not in DRIVERS:
        raise UnknownProvider(name)
    module_name, _, class_name = DRIVERS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DriverUnavailable(name, f"cannot import {module_name} ({exc})") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseDriver)):
        raise DriverUnavailable(name, f"{module_name} has no driver class {class_name}")
    return cls


class DriverRegistry:
    def __init__(self, deps: DriverDeps, current: str) -> None:
        if current not in DRIVERS:
            raise UnknownProvider(current)
        self.deps = deps
        self._current = current
        self._drivers: dict[str, BaseDriver] = {}
        self._lock = asyncio.Lock()

    @property
    def current_name(self) -> str:
        return self._current

    @property
    def available(self) -> list[str]:
        return list(DRIVERS)

    def loaded(self) -> list[str]:
        return list(self._drivers)

    async def get(self, name: str) -> BaseDriver:
        """The driver for `name`, imported and initialised on first use."""
        driver = self._drivers.get(name)
        if driver is not None:
            return driver
        if name not in DRIVERS:
            raise UnknownProvider(name)
        async with self._lock:
            driver = self._drivers.get(name)
            if driver is None:
                cls = load_driver_class(name)
                driver = cls(self.deps)
                try:
                    await driver.initialize()
                except Exception as exc:
                    raise DriverUnavailable(name, f"{type(exc).__name__}: {exc}") from exc
                self._drivers[name] = driver
                log.info("voice driver loaded", extra={"provider": name})
        return driver

    async def current(self) -> BaseDriver:
        return await self.get(self._current)

    async def switch(self, name: str) -> BaseDriver:
        """Make `name` the current provider (loaded first, so a broken one is never current)."""
        driver = await self.get(name)
        self._current = name
        log.info("voice provider switched", extra={"provider": name})
        return driver

    async def aclose(self) -> None:
        for name, driver in list(self._drivers.items()):
            try:
                await driver.aclose()
            except Exception:
                log.warning("driver did not close cleanly", extra={"provider": name}, exc_info=True)
        self._drivers.clear()
