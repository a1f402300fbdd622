"""smtp_offload.units: the one size formatter and the one human time formatter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from smtp_offload.notices import items as notice
from smtp_offload.links import pages
from smtp_offload.units import human_size, when


@pytest.mark.parametrize(("n", "shown"), [
    (0, "0 bytes"),
    (1, "1 bytes"),
    (512, "512 bytes"),
    (1023, "1023 bytes"),
    (1024, "1.0 KiB"),
    (97_800, "95.5 KiB"),
    (400_000, "390.6 KiB"),
    (1_048_575, "1.0 MiB"),  # the unit follows the printed value: never "1024.0 KiB"
    (1_048_576, "1.0 MiB"),
    (40_000_000, "38.1 MiB"),
    (10 * 1024 * 1024, "10.0 MiB"),
    (1024 ** 3 - 1, "1.0 GiB"),
    (1_288_490_189, "1.2 GiB"),
    (5 * 1024 ** 4, "5120.0 GiB"),  # GiB is the largest unit
])
def test_human_size_in_iec_units(n: int, shown: str) -> None:
    assert human_size(n) == shown


def test_when_to_the_minute_in_utc() -> None:
    ts = int(datetime(2026, 11, 30, 14, 5, 59, tzinfo=timezone.utc).timestamp())
    assert when(ts) == "2026-11-30 14:05 UTC"
    assert when(float(ts)) == "2026-11-30 14:05 UTC"
    assert when(0) == "1970-01-01 00:00 UTC"


def test_when_takes_datetimes_aware_or_naive() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert when(datetime(2026, 11, 30, 16, 5, tzinfo=plus_two)) == "2026-11-30 14:05 UTC"
    assert when(datetime(2026, 11, 30, 14, 5)) == "2026-11-30 14:05 UTC"  # naive: taken as UTC


def test_notice_and_pages_show_the_same_units() -> None:
    """One formatter: the mail notice and the landing page say the same thing."""
    assert notice.human_size is human_size and notice.when is when
    assert pages.human_size is human_size and pages.when is when


def test_received_date_on_the_landing_page() -> None:
    assert pages._received("2026-11-20T12:00:00+02:00") == "2026-11-20 10:00 UTC"
    assert pages._received("2026-11-20T10:00:00") == "2026-11-20 10:00 UTC"
    for odd in ("yesterday", "", "0001-01-01T00:00:00+01:00"):  # shown as stored
        assert pages._received(odd) == odd
