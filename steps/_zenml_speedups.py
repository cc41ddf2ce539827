"""A per-run ZenML cost, removed.

For every stored artifact whose type comes from an installed package (pandas DataFrames, the
judge's scikit-learn pipeline), ZenML records that package and its version. To find the
package, `zenml.utils.source_utils._get_package_for_module` calls
`importlib.metadata.packages_distributions()`, which reads the metadata and file list of every
installed distribution, once per distinct module: slow in an environment as large as this project's.
Which distributions provide which top-level modules cannot change while a pipeline runs, so
the table is read once per process and every lookup answers from it, with ZenML's own rule
(exactly one distribution, or none). On a ZenML without that function nothing is changed.
"""

from __future__ import annotations

import functools
import importlib.metadata

from zenml.utils import source_utils


@functools.cache
def _distributions_by_top_level_module() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def package_for_module(module_name: str) -> str | None:
    """The one installed distribution that provides `module_name`'s top-level package, if any."""
    names = _distributions_by_top_level_module().get(module_name.split(".", maxsplit=1)[0], [])
    return names[0] if len(names) == 1 else None


def cache_package_lookups() -> None:
    if callable(getattr(source_utils, "_get_package_for_module", None)):
        source_utils._get_package_for_module = package_for_module
