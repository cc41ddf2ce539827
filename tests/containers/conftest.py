"""The container tests use the integration tests' ZenML store and stack."""

from tests.integration.conftest import stack  # noqa: F401
