#!/usr/bin/env python3
"""Check the crate's structure against the rule in ARCHITECTURE.md; exit 1 on a breach.

  scripts/check-structure.py              # the checks below; silent when all hold
  scripts/check-structure.py --graph      # also print every file's imports
  scripts/check-structure.py --self-test  # show on a made-up crate that each check bites

1. No import circle between files: no file imports one that (directly or through others)
   imports it back.
2. Imports go down the layers listed in ARCHITECTURE.md (the ```layers block): a file may
   import files of its own layer and of lower ones, never of a higher one.
3. Sizes: no file over 600 lines and no function over 80, test modules not counted, except the
   ones allowed below with the reason.

An import is any path into the crate in non-test code: `use crate::a::b::{c, d::e}`, an inline
`crate::a::b::f()`, or `super::x`. It is attributed to the file the path names (the longest
prefix that is a module file), so a folder's mod.rs only counts when a path stops at the
folder. Comments, string literals and `#[cfg(test)]` modules are ignored.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FILE_LINES = 600
MAX_FN_LINES = 80

# Longer on purpose; each with the reason. Keys: "path" for files, "path::fn" for functions.
ALLOWED = {
    "src/qemu/argv.rs::argv": "a straight-line renderer of the QEMU command line, one block per device",
}


def strip_code(text):
    """Blank out comments, string and char literals (keeping line breaks), so that what is
    left is code whose braces and paths can be read."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and not re.match(r"\w", text[i - 1 : i] or " "):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i : j + 1]))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:  # a char literal (not a lifetime)
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(code, open_at):
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code) - 1


def drop_test_modules(code):
    """Blank `#[cfg(test)] mod NAME { ... }` (keeping line breaks); also how many lines they
    took."""
    test_lines = 0
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", code)
        if not m:
            return code, test_lines
        end = matching_brace(code, m.end() - 1)
        test_lines += code.count("\n", m.start(), end) + 1
        code = code[: m.start()] + re.sub(r"[^\n]", " ", code[m.start() : end + 1]) + code[end + 1 :]


def module_of(path, src):
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts == ["lib"]:
        return ()
    return tuple(parts)


def expand_use_tree(tree):
    """`a::{b, c::{d, self}}` -> [a::b, a::c::d, a::c]."""
    tree = tree.strip()
    m = re.match(r"^(.*?)::\s*\{(.*)\}$", tree, re.S)
    if not m:
        return [re.sub(r"\s+as\s+\w+$", "", tree)]
    prefix, inner = m.group(1), m.group(2)
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for it in filter(str.strip, items):
        for sub in expand_use_tree(it):
            out.append(prefix if sub.strip() == "self" else f"{prefix}::{sub.strip()}")
    return out


def resolve(segments, modules):
    """The longest prefix of `segments` that is a module of the crate."""
    for k in range(len(segments), 0, -1):
        if tuple(segments[:k]) in modules:
            return tuple(segments[:k])
    return None


def imports(path, src, code, modules):
    """(target module, line, name used) for every path into the crate."""
    me = module_of(path, src)
    found = []

    def add(p, line):
        segs = [s for s in p.split("::") if s]
        if not segs:
            return
        if segs[0] == "crate":
            segs = segs[1:]
        elif segs[0] == "super":
            base = list(me)
            while segs and segs[0] == "super":
                base = base[:-1]
                segs = segs[1:]
            segs = base + segs
        elif segs[0] == "self":
            segs = list(me) + segs[1:]
        else:
            return
        target = resolve(segs, modules)
        if target is not None and target != me:
            found.append((target, line, segs[-1]))

    for m in re.finditer(r"\buse\s+((?:crate|super|self)\b[^;]*);", code):
        line = code.count("\n", 0, m.start()) + 1
        for p in expand_use_tree(m.group(1)):
            add(p, line)
    no_use = re.sub(r"\buse\s+[^;]*;", lambda m: re.sub(r"[^\n]", " ", m.group(0)), code)
    for m in re.finditer(r"\b(?:crate|super)(?:::\w+)+", no_use):
        add(m.group(0), code.count("\n", 0, m.start()) + 1)
    return found


def layers(root):
    text = (root / "ARCHITECTURE.md").read_text()
    m = re.search(r"```layers\n(.*?)```", text, re.S)
    if not m:
        sys.exit("check-structure: ARCHITECTURE.md has no ```layers block")
    order = {}
    for i, line in enumerate(reversed([l for l in m.group(1).splitlines() if l.strip()])):
        for name in re.findall(r"[a-z_]+", line.split("#")[0]):
            order[name] = i
    return order


def cycles(graph):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def long_functions(path, code):
    for m in re.finditer(r"^(\s*)(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)[^{;]*\{", code, re.M):
        end = matching_brace(code, m.end() - 1)
        lines = code.count("\n", m.start(), end) + 1
        if lines > MAX_FN_LINES:
            yield m.group(2), code.count("\n", 0, m.start()) + 1, lines


def check(root):
    """Every breach of the rule in the crate at `root`, one message each."""
    src = root / "src"
    files = sorted(p for p in src.rglob("*.rs") if p.name != "main.rs")
    modules = {module_of(p, src): p for p in files}
    order = layers(root)
    problems, graph, detail = [], {}, {}
    for p in files:
        rel = str(p.relative_to(root))
        code, test_lines = drop_test_modules(strip_code(p.read_text()))
        me = module_of(p, src)
        for target, line, name in imports(p, src, code, modules):
            graph.setdefault(me, set()).add(target)
            detail.setdefault((me, target), []).append(f"{name} (line {line})")
        top = me[0] if me else "lib"
        if top not in order:
            problems.append(f"{rel}: its folder or file `{top}` is in no layer of ARCHITECTURE.md")
        n = code.count("\n") - test_lines
        if n > MAX_FILE_LINES and rel not in ALLOWED:
            problems.append(f"{rel}: {n} lines without tests; at most {MAX_FILE_LINES}")
        for fn, line, length in long_functions(p, code):
            if f"{rel}::{fn}" not in ALLOWED:
                problems.append(f"{rel}:{line}: fn {fn} is {length} lines; at most {MAX_FN_LINES}")
    show = lambda m: str(modules[m].relative_to(root))
    for comp in cycles(graph):
        ties = [
            f"    {show(a)} -> {show(b)}: {', '.join(sorted(set(detail[(a, b)])))}"
            for a in comp
            for b in sorted(graph.get(a, ()))
            if b in comp
        ]
        problems.append("import circle between " + ", ".join(map(show, comp)) + ":\n" + "\n".join(ties))
    for (a, b), names in sorted(detail.items()):
        la, lb = order.get(a[0] if a else "lib"), order.get(b[0] if b else "lib")
        if la is not None and lb is not None and lb > la:
            problems.append(f"{show(a)} imports {show(b)} of a higher layer: {', '.join(sorted(set(names)))}")
    if "--graph" in sys.argv:
        for m in sorted(graph):
            print(show(m), "->", ", ".join(sorted(show(t) for t in graph[m])))
    return problems


def self_test():
    """A made-up crate with one breach of each kind (and code that looks like one but is not):
    each check must name its breach, and nothing else."""
    import tempfile

    files = {
        "ARCHITECTURE.md": "```layers\nlib\nhigh\nlow other\n```\n",
        "src/lib.rs": "pub mod high;\npub mod low;\npub mod other;\n",
        "src/high.rs": "use crate::low::f;\n",
        "src/low/mod.rs": "pub mod a;\npub mod b;\n",
        "src/low/a.rs": "use super::b::g;\n// crate::high::x in a comment\nfn s() { let _ = \"crate::high\"; }\n",
        "src/low/b.rs": "pub fn g() { crate::low::a::s(); crate::high::h(); }\n#[cfg(test)]\nmod tests { use crate::other::t; }\n",
        "src/other.rs": "fn long() {\n" + "    let _ = 1;\n" * 81 + "}\n",
        "src/stray.rs": "",
    }
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        got = check(root)
    expected = [
        "src/other.rs:1: fn long is 83 lines",
        "src/stray.rs: its folder or file `stray` is in no layer",
        "import circle between src/low/a.rs, src/low/b.rs",
        "src/low/b.rs imports src/high.rs of a higher layer: h (line 1)",
    ]
    missing = [e for e in expected if not any(e in g for g in got)]
    extra = [g for g in got if not any(e in g for e in expected)]
    for m in missing:
        print(f"check-structure: self-test: not reported: {m}", file=sys.stderr)
    for x in extra:
        print(f"check-structure: self-test: reported wrongly: {x}", file=sys.stderr)
    return 1 if missing or extra else 0


def main():
    if "--self-test" in sys.argv:
        return self_test()
    problems = check(ROOT)
    for p in problems:
        print(f"check-structure: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
