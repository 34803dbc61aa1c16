"""Benchmarks (see BENCHMARKS.md) and the deployment harness shared with chaos/."""
