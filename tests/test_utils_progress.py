"""Progress in a log: plain lines, none for short work, one whenever the interval has
passed since the last line of any step, and the last when a step that printed ends;
nothing when turned off. A fake clock stands in for time: nothing sleeps."""

import pytest

from l2bt.cli import main
from l2bt.utils import progress


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progress, "LINES", progress.LineClock(fake))
    monkeypatch.setattr(progress, "_enabled", [True])
    return fake


def work(bar, clock, steps, seconds):
    """`steps` updates of `bar`, `seconds` apart on the fake clock."""
    with bar:
        for _ in range(steps):
            clock.now += seconds
            bar.update(1)


def test_logged_progress_is_whole_lines_one_per_interval(clock, capsys):
    step = progress.LOG_SECONDS / 2
    work(progress.progress_bar(total=8, desc="predict", unit="img"), clock, 8, step)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err
    # 8 steps of half an interval: a line at steps 2, 4, 6 and 8, then the last line
    assert len(lines) == 5
    assert all(line.startswith("predict: ") for line in lines)
    assert lines[0].startswith("predict: 2/8 img (25 %)")
    assert lines[-1].startswith("predict: 8/8 img (100 %), 80 s")


def test_short_work_prints_nothing(clock, capsys):
    for _ in progress.progress_bar(range(100), desc="quick"):
        clock.now += 0.01
    with progress.progress_bar(total=2, desc="students") as bar:
        for step in range(2):
            bar.update(1)
            bar.set_postfix(loss=f"{step:.4f}")
    assert capsys.readouterr().err == ""


def test_one_clock_for_every_step(clock, capsys):
    """Two steps shorter than the interval each: the second prints, as the interval has
    passed since the last line of any step."""
    step = progress.LOG_SECONDS / 5
    work(progress.progress_bar(total=3, desc="first"), clock, 3, step)
    work(progress.progress_bar(total=3, desc="second"), clock, 3, step)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("second: ") for line in lines)
    assert lines[-1].startswith("second: 3/3")


def test_turned_off_prints_nothing(clock, capsys):
    progress.set_progress(False)
    work(progress.progress_bar(total=3, desc="off"), clock, 3, progress.LOG_SECONDS)
    assert capsys.readouterr().err == ""


def test_the_environment_turns_it_off(monkeypatch):
    monkeypatch.delenv("L2BT_PROGRESS", raising=False)
    assert progress.progress_from_environment()
    for value in ("off", "0", "no", "OFF"):
        monkeypatch.setenv("L2BT_PROGRESS", value)
        assert not progress.progress_from_environment()


def test_the_cli_sets_it_once_from_the_environment(monkeypatch, tmp_path):
    """`l2bt` reads L2BT_PROGRESS when it starts; the library's bars then follow it."""
    monkeypatch.setattr(progress, "_enabled", [True])
    monkeypatch.setenv("L2BT_PROGRESS", "off")
    assert main(["check-data", "--data", str(tmp_path / "missing")]) == 2
    assert not progress.progress_enabled()
    monkeypatch.setenv("L2BT_PROGRESS", "on")
    main(["check-data", "--data", str(tmp_path / "missing")])
    assert progress.progress_enabled()
