"""The one settings object: environment, overrides, range checks."""

import re

import pytest

from recjobs.errors import ConfigError
from recjobs.settings import Settings, from_env, setting_help


def test_environment_then_overrides():
    s = from_env({"RECJOBS_DB": "/tmp/x.db", "RECJOBS_K": "7", "RECJOBS_ALPHA": "3.5"}, k=9)
    assert str(s.db) == "/tmp/x.db" and s.k == 9 and s.alpha == 3.5


def test_bad_environment_value():
    with pytest.raises(ConfigError, match="RECJOBS_FACTORS='many' is not a valid int"):
        from_env({"RECJOBS_FACTORS": "many"})


@pytest.mark.parametrize(
    "name, value",
    [("k", 0), ("factors", 0), ("iterations", 0), ("alpha", -1), ("gate_tolerance", 1.5), ("positive_threshold", 9)],
)
def test_out_of_range(name, value):
    with pytest.raises(ConfigError, match=f"setting {name}="):
        Settings(**{name: value})


def test_every_setting_has_help():
    assert all(help_text.strip() for _, help_text in setting_help().values())


def test_a_yes_or_no_setting_reads_true_or_false_from_the_environment():
    from recjobs.errors import ConfigError
    from recjobs.settings import from_env

    assert from_env({"RECJOBS_WARM_START": "false"}).warm_start is False
    assert from_env({"RECJOBS_WARM_START": "Yes"}).warm_start is True
    with pytest.raises(ConfigError, match=r"RECJOBS_WARM_START='maybe' is not a valid bool; expected true or false"):
        from_env({"RECJOBS_WARM_START": "maybe"})


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("spark_partitions", -1, "expected 0 (Spark's default parallelism) up to 100000"),
        ("spark_master", "yarn", "expected local[*], local[N], spark://host:port or sc://host:port"),
        ("spark_candidates", 5, "expected at least k, at most 10000"),
    ],
)
def test_a_bad_spark_setting_names_what_is_expected(name, value, expected):
    with pytest.raises(ConfigError, match=re.escape(f"setting {name}={value!r} is out of range; {expected}")):
        Settings(**{name: value})


def test_spark_partitions_zero_means_spark_decides():
    assert Settings(spark_partitions=0).spark_partitions == 0
