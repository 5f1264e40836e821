"""Statistics across runs, tables and figures, computed from saved results only."""
