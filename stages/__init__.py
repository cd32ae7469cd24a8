"""The domain: execute, aggregate, profile, recommend. Each a pure transform plus a thin run()."""
