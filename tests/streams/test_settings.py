"""`Settings.from_env`: every variable parsed, bad values refused with the variable's name."""

from __future__ import annotations

import pytest

from streams.settings import ENV_NAMES, Settings, SettingsError


def test_defaults_without_environment():
    s = Settings.from_env({})
    assert (s.bootstrap_servers, s.partitions, s.producer_compression) == ("", 4, "zstd")
    assert not s.exactly_once and not s.one_record_per_batch and not s.producer_idempotence
    assert s.pipeline.entities.model == s.spacy_model


def test_every_field_has_a_variable_and_env_round_trips():
    fields = set(Settings.__dataclass_fields__) - {"pipeline"}
    assert set(ENV_NAMES) == fields
    assert len(set(ENV_NAMES.values())) == len(ENV_NAMES)
    custom = Settings.from_env({
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9092", "NEWSFLOW_PARTITIONS": "12",
        "NEWSFLOW_BATCH_WITHIN": "0.25", "NEWSFLOW_EXACTLY_ONCE": "yes",
        "NEWSFLOW_PRODUCER_COMPRESSION": "none", "NEWSFLOW_MAX_PAGE_BYTES": "2000000",
    })  # fmt: skip
    assert custom.servers == ["k1:9092", "k2:9092"]
    assert (custom.partitions, custom.batch_within, custom.exactly_once) == (12, 0.25, True)
    assert custom.pipeline.extract.max_bytes == 2_000_000
    assert custom.envelope_limits.max_page_bytes == 2_000_000
    assert Settings.from_env(custom.env()) == custom


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("NEWSFLOW_PARTITIONS", "four", "not a whole number"),
        ("NEWSFLOW_PARTITIONS", "0", "must be positive"),
        ("NEWSFLOW_BATCH_WITHIN", "soon", "not a number"),
        ("NEWSFLOW_EXACTLY_ONCE", "maybe", "not a boolean"),
        ("NEWSFLOW_PRODUCER_COMPRESSION", "brotli", "one of"),
        ("NEWSFLOW_PRODUCER_ACKS", "2", "all, 1 or 0"),
        ("NEWSFLOW_STORE", "redis://", "memory:// or rocksdb://"),
        ("NEWSFLOW_WEB_PORT", "70000", "not a port"),
        ("NEWSFLOW_HEARTBEAT_INTERVAL", "40", "shorter than"),
        ("NEWSFLOW_PRODUCER_RETRIES", "-1", "must not be negative"),
    ],
)
def test_bad_values_name_their_variable(name, value, message):
    with pytest.raises(SettingsError, match=message) as info:
        Settings.from_env({name: value})
    assert name in str(info.value)


def test_blank_values_mean_default():
    blank = {"NEWSFLOW_PARTITIONS": "  ", "NEWSFLOW_APP_ID": ""}
    assert Settings.from_env(blank) == Settings.from_env({})
