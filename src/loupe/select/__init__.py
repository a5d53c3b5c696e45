"""Active-learning strategies: plug-ins over arrays."""
