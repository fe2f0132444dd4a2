"""Benchmarks that print figures (issue 8): `python -m bench {throughput,sessions,bringup,suite,
links,datapath} [--json FILE]`. Not tests: nothing here asserts a time."""
