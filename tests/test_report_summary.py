"""results.md from results JSON files: the section of SegF1 at each stored threshold."""

import json

from l2bt.report.summary import SEG_F1_TEXT, write_summary

LIMITS = ("0.3", "0.1", "0.05", "0.01")
BINS = ("q1", "q2", "q3", "all")


def result(method, category, seg_f1_at=None, pixel_f1_max=0.5):
    """The part of a benchmark results JSON that the summary reads."""
    aupro = {limit: dict.fromkeys(BINS, 0.5) for limit in LIMITS}
    found = {
        "method": method,
        "category": category,
        "aupro": aupro,
        "oracle": {"image_f1_max": 0.9, "pixel_f1_max": pixel_f1_max},
    }
    if seg_f1_at is not None:
        found["seg_f1_at"] = seg_f1_at
    return found


def write_results(out, results):
    for found in results:
        path = out / "results" / found["method"] / f"{found['category']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(found))


def section(report, title):
    """The lines of a `## title` section, up to the next section."""
    after = report.split(f"## {title}\n", 1)[1]
    return after.split("\n## ", 1)[0].strip().splitlines()


def test_seg_f1_at_each_threshold_sits_next_to_the_oracle(tmp_path):
    write_results(
        tmp_path,
        [
            result("a", "tile", {"pixel": 0.1234, "segmentation": 0.4320}, pixel_f1_max=0.6780),
            result("a", "wood", {"pixel": 0.2, "segmentation": 0.4}, pixel_f1_max=0.7),
            result("b", "tile", {"pixel": 0.3333}, pixel_f1_max=0.5555),
        ],
    )
    write_summary(tmp_path, ["a", "b"], ["tile", "wood"])
    lines = section((tmp_path / "results.md").read_text(), "Segmentation F1 per threshold")
    assert lines[0] == SEG_F1_TEXT
    header = "| method | category | SegF1 pixel | SegF1 segmentation | oracle pixel F1-max |"
    assert lines[2] == header
    assert "| a | tile | 0.1234 | 0.4320 | 0.6780 |" in lines
    assert "| a | mean | 0.1617 | 0.4160 | 0.6890 |" in lines
    assert "| b | tile | 0.3333 | — | 0.5555 |" in lines


def test_no_section_without_seg_f1(tmp_path):
    write_results(tmp_path, [result("a", "tile")])
    write_summary(tmp_path, ["a"], ["tile"])
    report = (tmp_path / "results.md").read_text()
    assert "## Decisions" in report and "Segmentation F1 per threshold" not in report
