"""Coverage-guided fuzz targets (atheris). Run one: python tests/fuzz/fuzz_events.py -runs=100000"""
