"""`make bench`: the services under load beside a bare two-hop floor (see BENCHMARKS.md)."""
