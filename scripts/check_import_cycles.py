"""Fail on any import cycle between the modules of a package (`make lint`; default: mbad).

A cycle is a set of modules each of which imports, directly or through the others, all the rest:
an import inside a function counts, since it only postpones the cycle to run time. Each cycle is
printed with its modules and the imports that close it; the exit status is 1 when there is one.

    .venv/bin/python scripts/check_import_cycles.py [package ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grimp


def import_graph(package: str) -> grimp.ImportGraph:
    return grimp.build_graph(package, include_external_packages=False, cache_dir=None)


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of the graph with more than one module, each sorted,
    in sorted order."""
    imports = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    # Tarjan's algorithm, iterative: a component is found when the walk returns to its first module.
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(imports):
        if root in index:
            continue
        walk = [(root, iter(imports[root]))]
        index[root] = lowlink[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while walk:
            module, targets = walk[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = lowlink[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    walk.append((target, iter(imports[target])))
                elif target in on_stack:
                    lowlink[module] = min(lowlink[module], index[target])
                continue
            walk.pop()
            if walk:
                parent = walk[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[module])
            if lowlink[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return sorted(cycles)


def describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    """The cycle's modules and each import between two of them, with its line."""
    lines = [f"import cycle between {len(cycle)} modules: {', '.join(cycle)}"]
    for importer in cycle:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & set(cycle)):
            for detail in graph.get_import_details(importer=importer, imported=imported):
                lines.append(f"  {importer}:{detail['line_number']} imports {imported}: {detail['line_contents']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", default=["mbad"], help="importable top-level packages (default: mbad)")
    args = parser.parse_args(argv)
    found = 0
    for package in args.packages:
        graph = import_graph(package)
        for cycle in import_cycles(graph):
            print(describe(graph, cycle))
            found += 1
    if found:
        print(f"{found} import cycle(s): move what both sides need into a module that neither imports back")
        return 1
    print(f"no import cycles in {', '.join(args.packages)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's packages
    sys.exit(main())
