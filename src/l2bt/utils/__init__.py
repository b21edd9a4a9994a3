"""Process utilities: atomic writes (`atomic`), devices and copies back from them
(`device`), per-image host work on every core (`host`), glibc's allocator (`allocator`),
progress for people (`progress`), and hand-editable JSON read into typed settings
(`typed_dict`). None of them knows what an anomaly map is."""
