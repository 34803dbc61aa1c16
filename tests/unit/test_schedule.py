"""EXTRACT_SCHEDULE: what it accepts, and the due times every scheduler agrees on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from feature_store.services.schedule import Schedule


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize("spec", [None, "", "   "])
def test_no_schedule(spec):
    assert Schedule.parse(spec) is None


@pytest.mark.parametrize("spec", ["0", "-5", "1.5", "soon", "* * * *", "0 0 * * * *", "61 * * * *", "@daily x"])
def test_a_malformed_schedule_is_refused_naming_the_setting(spec):
    with pytest.raises(ValueError, match="EXTRACT_SCHEDULE"):
        Schedule.parse(spec)


def test_cron_fields_are_utc():
    schedule = Schedule.parse("30 3 * * *")
    assert schedule.next_due(at("2026-12-01 02:00:00")) == at("2026-12-01 03:30:00")
    assert schedule.next_due(at("2026-12-01 03:30:00")) == at("2026-12-02 03:30:00")  # strictly after


def test_intervals_fall_on_multiples_of_their_length_so_every_process_agrees():
    schedule = Schedule.parse("600")
    assert schedule.next_due(at("2026-12-01 10:03:17")) == at("2026-12-01 10:10:00")
    assert schedule.next_due(at("2026-12-01 10:10:00")) == at("2026-12-01 10:20:00")
    # Two processes started at different moments compute the same due times.
    assert schedule.next_due(at("2026-12-01 10:00:01")) == schedule.next_due(at("2026-12-01 10:09:59"))


def test_describe():
    assert Schedule.parse(" 15 ").describe() == "every 15 s"
    assert Schedule.parse("0  3 * * 1").describe() == "cron '0 3 * * 1' (UTC)"
