#!/usr/bin/env python3
"""Fails if the modules of a crate import each other in a cycle.

A module is a file or folder directly under the crate's `src/` (`api/`, `cli/`,
`replication/` and `node/` count as one module each; `lib.rs` and `main.rs`
are left out: they only declare and start). An import is any `crate::NAME`
path in the module's code (`use crate::node::Node;`, `crate::serve::env(...)`),
and any `super::` path that climbs out of the module to the crate root
(`super::store` in `node.rs` or `node/mod.rs`, `super::super::store` in
`node/app.rs`), comments and `#[cfg(test)]` modules excluded. Prints the layers from the
bottom up, and each cycle with the names that tie it.

    scripts/check-layers.py [CRATE_SRC ...]     (default: kms-node/src)
"""
import pathlib
import re
import sys


def strip(text: str) -> str:
    """Code without comments and without `#[cfg(test)] mod ... { }` blocks."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def modules(src: pathlib.Path) -> dict:
    mods = {}
    for p in sorted(src.rglob("*.rs")):
        rel = p.relative_to(src)
        name = rel.parts[0].removesuffix(".rs")
        if name in ("lib", "main"):
            continue
        mods.setdefault(name, []).append(p)
    return mods


def depth(src: pathlib.Path, f: pathlib.Path) -> int:
    """How many `super::` from file `f` reach the crate root: 1 for `x.rs`
    and `x/mod.rs`, 2 for `x/y.rs`, ..."""
    parts = list(f.relative_to(src).parts)
    if parts[-1] == "mod.rs":
        parts.pop()
    return len(parts)


def edges(src: pathlib.Path, mods: dict) -> dict:
    out = {m: {} for m in mods}
    for m, files in mods.items():
        for f in files:
            code = strip(f.read_text())
            # `super::` paths that climb to the crate root name a module
            # there, as `crate::` would (inline modules only make a path
            # climb further, so this errs on the strict side).
            up = depth(src, f)
            for supers, group, single in re.findall(
                r"\b((?:super::)+)(?:\{([^}]*)\}|(\w+))", code
            ):
                if supers.count("super::") < up:
                    continue
                names = group.split(",") if group else [single]
                for part in names:
                    target = part.strip().split("::")[0]
                    if target in mods and target != m:
                        out[m].setdefault(target, set()).add(str(f))
            # `use crate::{a, b::C}` and `crate::a::...` alike.
            for group in re.findall(r"crate::\{([^}]*)\}", code):
                for part in group.split(","):
                    target = part.strip().split("::")[0]
                    if target in mods and target != m:
                        out[m].setdefault(target, set()).add(str(f))
            for target in re.findall(r"crate::(\w+)", code):
                if target in mods and target != m:
                    out[m].setdefault(target, set()).add(str(f))
    return out


def cycles(g: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, comps, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in g:
        if v not in index:
            visit(v)
    return comps


def layers(g: dict) -> list:
    level, done = {}, set()
    while len(done) < len(g):
        ready = [m for m in g if m not in done and all(t in done for t in g[m])]
        if not ready:
            break
        for m in ready:
            level[m] = 1 + max((level[t] for t in g[m]), default=0)
        done.update(ready)
    by = {}
    for m, lv in level.items():
        by.setdefault(lv, []).append(m)
    return [sorted(by[k]) for k in sorted(by)]


def main() -> int:
    roots = sys.argv[1:] or ["kms-node/src"]
    failed = False
    for root in roots:
        src = pathlib.Path(root)
        g = edges(src, modules(src))
        found = cycles(g)
        if found:
            failed = True
            for c in found:
                print(f"{root}: module cycle: {' <-> '.join(c)}")
                for a in c:
                    for b in c:
                        if b in g[a]:
                            print(f"  {a} imports {b} in {', '.join(sorted(g[a][b]))}")
        else:
            print(f"{root}: no module cycle; layers from the bottom up:")
            for i, ms in enumerate(layers(g), 1):
                print(f"  {i}: {' '.join(ms)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
