"""Progress in a log: plain lines, none for short work, at most one per interval, and the
last when the work ends; nothing when turned off."""

import time

import pytest

from l2bt import progress
from l2bt.cli.common import show_progress


@pytest.fixture
def short_interval(monkeypatch):
    monkeypatch.setattr(progress, "LOG_SECONDS", 0.2)


def test_logged_progress_is_whole_lines_at_most_one_per_interval(short_interval, capsys):
    with progress.progress_bar(total=8, desc="predict", unit="img") as bar:
        for _ in range(8):
            time.sleep(0.1)
            bar.update(1)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err
    assert 2 <= len(lines) <= 5  # 0.8 s of work, a line at most every 0.2 s, after 0.2 s
    assert all(line.startswith("predict:") for line in lines)
    assert "8/8" in lines[-1]


def test_short_work_prints_nothing_in_a_log(short_interval, capsys):
    for _ in progress.progress_bar(range(100), desc="quick"):
        pass
    assert capsys.readouterr().err == ""


def test_turned_off_prints_nothing(short_interval, capsys):
    with progress.progress_bar(total=3, desc="off", enabled=False) as bar:
        for _ in range(3):
            time.sleep(0.15)
            bar.update(1)
    assert capsys.readouterr().err == ""


def test_the_cli_shows_progress_unless_turned_off(monkeypatch):
    monkeypatch.delenv("L2BT_PROGRESS", raising=False)
    assert show_progress()
    monkeypatch.setenv("L2BT_PROGRESS", "off")
    assert not show_progress()


def test_a_postfix_does_not_print_short_work(short_interval, capsys):
    with progress.progress_bar(total=2, desc="students") as bar:
        for step in range(2):
            bar.update(1)
            bar.set_postfix(loss=f"{step:.4f}")
    assert capsys.readouterr().err == ""
