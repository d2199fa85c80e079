"""Benchmarks: run as modules (`uv run python -m benchmarks.<name>`); see benchmarks/README.md."""
