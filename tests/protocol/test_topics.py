"""MQTT topic scheme and per-kind publish options."""

from __future__ import annotations

import pytest

import shared_protocol as sp
from shared_protocol.errors import BadTopic
from shared_protocol.topics import (
    DEFAULT_PREFIX,
    KIND_OF_TYPE,
    KINDS,
    PUBLISH_OPTIONS,
    TYPE_OF_KIND,
    levels,
    parse_topic,
    subscription,
    topic,
)


def test_build_and_parse() -> None:
    t = topic(DEFAULT_PREFIX, "plant-3", "esp32_01", "data")
    assert t == "el/plant-3/esp32_01/data"
    assert parse_topic(t) == ("el", "plant-3", "esp32_01", "data")
    assert parse_topic(t.encode()) == ("el", "plant-3", "esp32_01", "data")
    assert parse_topic(topic("x", "a" * 32, "B-9", "cmd"))[1] == "a" * 32


@pytest.mark.parametrize(
    "bad",
    [
        "el/site/dev",
        "el/site/dev/data/extra",
        "el/site/dev/unknown",
        "el//dev/data",
        "el/si te/dev/data",
        "el/site/dev+/data",
        "el/site/#/data",
        "$SYS/site/dev/data",
        "el/" + "a" * 33 + "/dev/data",
        "el/sité/dev/data",
        b"el/\xff/dev/data",
        "",
    ],
)
def test_invalid_topics_are_rejected(bad: str | bytes) -> None:
    with pytest.raises(BadTopic) as info:
        parse_topic(bad)
    assert info.value.reason == "topic"


def test_topic_refuses_bad_ids() -> None:
    with pytest.raises(BadTopic):
        topic("el", "a/b", "dev", "data")
    with pytest.raises(BadTopic):
        topic("el", "site", "", "data")
    with pytest.raises(BadTopic):
        topic("el", "site", "dev", "DATA")


def test_every_kind_has_options_and_a_frame_type() -> None:
    assert set(KINDS) == set(PUBLISH_OPTIONS) == set(TYPE_OF_KIND)
    for ftype, kind in KIND_OF_TYPE.items():
        assert TYPE_OF_KIND[kind] == ftype
    assert PUBLISH_OPTIONS["birth"] == (1, True)  # a restarted gateway gets the schema at once
    assert PUBLISH_OPTIONS["data"] == (1, False)
    assert PUBLISH_OPTIONS["cmd"] == (1, False)  # a retained REBOOT would reboot on every connect
    assert KIND_OF_TYPE[sp.DEATH] == "death"


def test_subscription_filters() -> None:
    assert subscription() == "el/+/+/+"
    assert subscription("el", "+", "+", "data") == "el/+/+/data"
    assert subscription("el", "s1", "d1", "#") == "el/s1/d1/#"
    with pytest.raises(BadTopic):
        subscription("el", "s/1")


def test_levels_splits_the_gateways_own_topics_too() -> None:
    assert levels("el/s1/_gateway/summary") == ("el", "s1", "_gateway", "summary")
    assert levels(b"el/s1/pump-1/alert") == ("el", "s1", "pump-1", "alert")
    for bad in ("el/s1/pump-1", "el/s1/pump-1/al+ert", "el/s 1/pump-1/alert"):
        with pytest.raises(BadTopic):
            levels(bad)
    with pytest.raises(BadTopic):
        parse_topic("el/s1/pump-1/alert")  # a device topic's kind is one of KINDS
