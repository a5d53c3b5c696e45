"""items use cases."""
