"""compare: targets side by side for a scenario (a read-only view of the results)."""
