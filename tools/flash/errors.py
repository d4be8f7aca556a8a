"""The one user-facing error of edgeline-flash."""

from __future__ import annotations


class FlashError(Exception):
    """A failure the user can act on: what failed, on which input, and what to do.

    The message is printed as ``edgeline-flash: <message>`` and the tool exits with status 1.
    It must never contain a secret (see ``devices.Secrets.redact``).
    """
