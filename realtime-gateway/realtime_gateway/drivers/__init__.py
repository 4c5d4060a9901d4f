"""Voice provider drivers behind `BaseDriver` (base.py), loaded lazily by `registry.py`."""
