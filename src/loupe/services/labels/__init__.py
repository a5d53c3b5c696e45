"""labels use cases."""
