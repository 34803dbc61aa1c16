"""Long fault-injection and soak runs (see RELIABILITY.md). Quick ones live in tests/."""
