"""The store: the data directory's layout, the event log, outputs, the lock and file safety.

Everything that touches the data directory's files is here, and nothing here imports the stages
or the CLI: `schemas` ← `pipeline.store` ← `stages` ← `pipeline.cli`.
"""
