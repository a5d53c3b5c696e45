"""auth use cases."""
