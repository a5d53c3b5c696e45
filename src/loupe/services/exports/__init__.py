"""exports use cases."""
