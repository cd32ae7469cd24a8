"""profile: trends across runs per (provider, model, scenario, target)."""
