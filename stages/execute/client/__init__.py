"""The HTTP client of `execute`: providers (wire formats), transport (lanes, the lean backend), framing, the error taxonomy, token counts."""
