"""Thin ZenML steps over the `mbad` library."""

# Importing the materializers registers them for their types.
import materializers.adapter  # noqa: F401
import materializers.classifier  # noqa: F401
from steps._zenml_speedups import cache_package_lookups

cache_package_lookups()
