#!/usr/bin/env python3
"""Print the longest chain of imports between the project's files, and its length.

A chain ``a -> b -> c`` means module a imports b and b imports c (at module level, in a function
or under TYPE_CHECKING: grimp counts every import statement). The longer the longest chain, the
more files a change low down can break and the more a test of a top module loads; issue 17
item 19 measures it before and after cutting edges.

The graph comes from grimp (installed with import-linter). Modules that import each other in a
cycle are merged into one node first, so the longest path is well defined; the chain printed
goes through one module of each merged group (its length counts files, cycle groups as one).

Usage: ``.venv/bin/python scripts/import_chain.py [PACKAGE ...]`` (default: the four packages
of pyproject.toml's import-linter contract).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from functools import cache

import grimp

PACKAGES = ("scep_ca", "challenge", "store", "config")


def _components(modules: set[str], imports: dict[str, set[str]]) -> dict[str, int]:
    """Strongly connected components (Tarjan, iterative): module -> component number."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    component: dict[str, int] = {}
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(sorted(imports[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(imports[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    number = len(set(component.values()))
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component[member] = number
                        if member == node:
                            break
    return component


def longest_chain(packages: Iterable[str]) -> list[str]:
    """The modules of a longest import chain, importer first."""
    graph = grimp.build_graph(*packages)
    modules = set(graph.modules)
    imports = {m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules}
    component = _components(modules, imports)

    @cache
    def longest_from(module: str) -> tuple[str, ...]:
        best: tuple[str, ...] = ()
        for target in sorted(imports[module]):
            if component[target] == component[module]:
                continue  # an import inside a cycle group adds no depth
            chain = longest_from(target)
            if len(chain) > len(best):
                best = chain
        return (module, *best)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(modules) + 100))
    return max((list(longest_from(m)) for m in sorted(modules)), key=len)


def main(argv: list[str]) -> int:
    chain = longest_chain(argv or PACKAGES)
    print(f"longest import chain: {len(chain)} files, {len(chain) - 1} imports")
    for depth, module in enumerate(chain):
        print(f"{'  ' * depth}{module}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
