"""ZenML pipelines: one per user-facing job."""
