"""Decisions from maps: calibration images, thresholds with a stated false-alarm rate,
masks, verdicts and defect regions (SPEC §7)."""
