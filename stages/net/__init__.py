"""Networking both sides share: stamping when bytes arrived (the client's backend, the mock server)."""
