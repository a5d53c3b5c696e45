"""projects use cases."""
