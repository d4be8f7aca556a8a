"""Errors of the store-and-forward subpackage (one small hierarchy under ``gateway.errors``)."""

from __future__ import annotations

from gateway.errors import ConfigError, GatewayError


class ForwardError(GatewayError):
    """Base class of every error raised by ``gateway.forward``."""


class ForwardConfigError(ForwardError, ConfigError):
    """The ``[forward]`` table has a missing, unknown or badly typed key.

    The message names the key (``forward.<key>``) and what is expected.
    """


class RecordError(ForwardError, ValueError):
    """A record handed to ``Forwarder.submit`` cannot be queued (bad lane, not JSON-serialisable ...)."""


class QueueError(ForwardError):
    """The forward queue file cannot be opened or written."""
