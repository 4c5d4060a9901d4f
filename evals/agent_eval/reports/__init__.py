"""What a run reports: a table and the failures on the terminal, JUnit XML for CI, and one
self-contained HTML page."""
