"""Progress in a log: plain lines, none for short work, one whenever the interval has
passed since the last line of any step, and the last when a step that printed ends;
nothing when turned off."""

import time

import pytest

from l2bt.cli.common import show_progress
from l2bt.utils import progress


@pytest.fixture
def short_interval(monkeypatch):
    monkeypatch.setattr(progress, "LOG_SECONDS", 0.2)
    monkeypatch.setattr(progress, "_last_line", [time.monotonic()])


def work(bar, steps, seconds):
    with bar:
        for _ in range(steps):
            time.sleep(seconds)
            bar.update(1)


def test_logged_progress_is_whole_lines_about_one_per_interval(short_interval, capsys):
    work(progress.progress_bar(total=8, desc="predict", unit="img"), 8, 0.1)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err
    assert 3 <= len(lines) <= 6  # 0.8 s of work: a line every 0.2 s or so, and the last
    assert all(line.startswith("predict: ") for line in lines)
    assert lines[-1].startswith("predict: 8/8 img (100 %)")


def test_short_work_prints_nothing(short_interval, capsys):
    for _ in progress.progress_bar(range(100), desc="quick"):
        pass
    with progress.progress_bar(total=2, desc="students") as bar:
        for step in range(2):
            bar.update(1)
            bar.set_postfix(loss=f"{step:.4f}")
    assert capsys.readouterr().err == ""


def test_one_clock_for_every_step(short_interval, capsys):
    """Two steps shorter than the interval each: the second prints, as the interval has
    passed since the last line of any step."""
    work(progress.progress_bar(total=3, desc="first"), 3, 0.05)
    work(progress.progress_bar(total=3, desc="second"), 3, 0.05)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("second: ") for line in lines)
    assert lines[-1].startswith("second: 3/3")


def test_turned_off_prints_nothing(short_interval, capsys):
    work(progress.progress_bar(total=3, desc="off", enabled=False), 3, 0.15)
    assert capsys.readouterr().err == ""


def test_the_cli_shows_progress_unless_turned_off(monkeypatch):
    monkeypatch.delenv("L2BT_PROGRESS", raising=False)
    assert show_progress()
    monkeypatch.setenv("L2BT_PROGRESS", "off")
    assert not show_progress()
