import pytest

from sluice.util.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("50ms", 0.05),
        ("2s", 2.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("500us", 0.0005),
        ("1.5s", 1.5),
        ("0.25", 0.25),
        ("0", 0.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ms", "5 seconds", "1x"])
def test_bad_durations_show_the_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match="50ms"):
        parse_duration(text)
