"""Anomaly maps on disk (SPEC §5, §7): the folder layout (`layout`), writing it from a
predictor (`predict`), scoring it against ground truth (`evaluate`) and the MVTec AD 2
upload layout (`submission`)."""
