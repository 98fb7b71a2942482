"""The process's verbosity and the plain-text tables every command prints."""

from __future__ import annotations

import logging

import optuna
import pytest

from harness import console


@pytest.fixture(autouse=True)
def normal_afterwards():
    yield
    console.set_verbosity(console.NORMAL)


def test_table_aligns_columns_and_formats_numbers():
    text = console.table(
        [{"a": "unet", "b": 0.123456, "c": 3.2e-4}, {"a": "unetpp", "b": float("nan"), "c": None}], ["a", "b", "c"]
    )
    assert text.splitlines() == [
        "  a       b       c",
        "  unet    0.1235  3.20e-04",
        "  unetpp  -       -",
    ]


def test_quiet_prints_only_the_summary(capsys):
    console.set_verbosity(console.QUIET)
    console.say("progress")
    console.summary("the answer")
    assert capsys.readouterr().out == "the answer\n"
    console.set_verbosity(console.NORMAL)
    console.say("progress")
    assert capsys.readouterr().out == "progress\n"


@pytest.mark.parametrize(
    ("level", "root", "chatty"),
    [
        (console.QUIET, logging.WARNING, logging.WARNING),
        (console.NORMAL, logging.INFO, logging.WARNING),
        (console.VERBOSE, logging.INFO, logging.INFO),
    ],
)
def test_each_level_sets_the_log_levels_that_follow_from_it(level, root, chatty):
    console.set_verbosity(level)
    assert console.verbosity() == level
    assert logging.getLogger().level == root
    assert {logging.getLogger(name).level for name in console.CHATTY_LOGGERS} == {chatty}
    assert optuna.logging.get_verbosity() == chatty


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="verbosity"):
        console.set_verbosity(5)
