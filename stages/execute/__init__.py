"""execute: providers, load generation, the mock; appends one event per request attempt."""
