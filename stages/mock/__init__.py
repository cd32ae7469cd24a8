"""The mock: one simulation (`sim`), played in-process by the `mock` provider and over HTTP by `http`."""
