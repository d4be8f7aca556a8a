"""ForwardConfig.from_dict: defaults, and errors that name the key and what is expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.forward import ForwardConfig, ForwardConfigError


def test_defaults_and_tls_port() -> None:
    cfg = ForwardConfig.from_dict({"host": "cloud.example"})
    assert (cfg.port, cfg.qos, cfg.payload_format, cfg.tls) == (1883, 1, "json", None)
    tls = ForwardConfig.from_dict({"host": "cloud.example", "tls": {"ca_file": "/etc/ca.pem"}})
    assert tls.port == 8883 and tls.tls is not None and tls.tls.verify is True
    assert tls.tls.ca_file == Path("/etc/ca.pem")
    assert tls.disk_budget_bytes == 256 * 1024 * 1024


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "forward.host: missing"),
        ({"host": 5}, "forward.host: expected a string"),
        ({"host": "h", "port": 70000}, "forward.port: expected <= 65535"),
        ({"host": "h", "qos": 0}, "forward.qos: only 1 is supported"),
        ({"host": "h", "payload_format": "xml"}, "forward.payload_format: expected one of json, sparkplug"),
        ({"host": "h", "disk_budget_mb": "big"}, "forward.disk_budget_mb: expected a number"),
        ({"host": "h", "disk_budget_mb": 0}, "forward.disk_budget_mb: expected >= 0.25"),
        ({"host": "h", "max_inflight": True}, "forward.max_inflight: expected an integer"),
        ({"host": "h", "backoff_min_s": 5, "backoff_max_s": 1}, "forward.backoff_max_s: expected >= backoff_min_s"),
        ({"host": "h", "disk_budget": 5}, "forward.disk_budget: unknown key"),
        ({"host": "h", "tls": {"ca": "x"}}, "forward.tls.ca: unknown key"),
        ({"host": "h", "tls": {"cert_file": "c"}}, "forward.tls.cert_file / forward.tls.key_file: set both"),
        ({"host": "h", "tls": {"verify": "yes"}}, "forward.tls.verify: expected true or false"),
        ({"host": "h", "password_file": "/p"}, "forward.password_file: set forward.username too"),
        ({"host": "h", "topic_prefix": "a/#"}, "forward.topic_prefix: expected a prefix without"),
        ({"host": "h", "bandwidth_limit_bytes_per_s": 0}, "forward.bandwidth_limit_bytes_per_s: expected >= 1"),
    ],
)
def test_errors_name_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ForwardConfigError) as info:
        ForwardConfig.from_dict(table)
    assert message in str(info.value)
