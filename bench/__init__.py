"""Benchmarks of the FHIR core that print every figure next to its limit measured in the same run.

Run ``python -m bench.core [--quick] [--resources N]``; see docs/performance.md.
"""
