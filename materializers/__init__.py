"""ZenML materializers for the types ZenML cannot store by itself."""
