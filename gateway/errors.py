"""The gateway's own errors: one base class, so a caller can catch every failure the gateway
reports on purpose (``except GatewayError``) and let real bugs through as tracebacks.

    GatewayError
    ├── ConfigError            a missing, unreadable or bad configuration value (message names the key)
    │   └── ForwardConfigError the ``[forward]`` table (gateway/forward/errors.py)
    ├── ForwardError           store-and-forward (RecordError, QueueError ...)
    ├── ModelError             a model or its manifest (gateway/manifest.py)
    ├── FeatureError           a feature spec or input array (gateway/features.py)
    └── CommandError           a user-facing CLI failure (gateway/cli.py)

Errors that are also a ``ValueError`` (a bad value handed in) keep that base too, so existing
``except ValueError`` callers still catch them.  This module imports nothing of the gateway: every
other module (``gateway.forward`` included) may import it.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose; the message says what to do."""


class ConfigError(GatewayError, ValueError):
    """The configuration file is missing, unreadable or has a bad value (the message names the key)."""
