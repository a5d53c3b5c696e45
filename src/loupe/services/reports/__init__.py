"""reports use cases."""
