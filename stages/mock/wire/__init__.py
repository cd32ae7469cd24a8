"""The mock server's wire formats: what they share (`base`), one module per provider."""
