"""The edges: event log, output tables, config, locking, the CLI. Kept light: no CLI import here."""
