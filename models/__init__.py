"""Reference models defined in code, each with example inputs and data generators."""
