"""Pydantic schemas, one module per resource.

Each has ``XCreate``, ``XUpdate``, ``XPublic`` and ``XsPublic``."""
