"""The sub-commands of tools/benchmark.py, one module each (common: what they share)."""
