"""The one user-facing error of edgeline-release."""

from __future__ import annotations


class ReleaseError(Exception):
    """A failure the user can act on: what failed, on which input, and what to do.

    Printed as ``edgeline-release: <message>`` (exit status 1); never contains key material.
    """
