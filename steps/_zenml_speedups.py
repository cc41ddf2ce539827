"""A per-run ZenML cost, removed.

For every stored artifact whose type comes from an installed package (pandas DataFrames, the
judge's scikit-learn pipeline), ZenML records that package and its version. To find the
package, `zenml.utils.source_utils._get_package_for_module` calls
`importlib.metadata.packages_distributions()`, which reads the metadata of every installed
distribution: 0.37 s in this project's environment, eight times per quickstart run. Which
package provides a module cannot change while a step runs, so the answer is cached per module
name for the life of the process. On a ZenML without that function nothing is changed.
"""

from __future__ import annotations

import functools

from zenml.utils import source_utils


def cache_package_lookups() -> None:
    lookup = getattr(source_utils, "_get_package_for_module", None)
    if callable(lookup) and not hasattr(lookup, "cache_info"):
        source_utils._get_package_for_module = functools.lru_cache(maxsize=None)(lookup)
