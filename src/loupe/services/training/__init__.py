"""training use cases."""
