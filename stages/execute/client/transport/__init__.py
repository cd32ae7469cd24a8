"""Connections: one lane per request in flight, over httpcore with a backend that stamps arrivals."""
