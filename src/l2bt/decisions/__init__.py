"""Decisions from maps: calibration images, thresholds with a stated false-alarm rate,
masks, verdicts and defect regions (SPEC §7); mask clean-up and a segmentation threshold
by conformal risk control (cleanup.py, risk.py)."""
