#!/usr/bin/env python3
"""The public API of the crates behind the `flujo` facade, as a sorted listing, from rustdoc's JSON output.

    scripts/public_api.py --check    # compare with crates/flujo/public-api.txt (the test command runs this)
    scripts/public_api.py --update   # rewrite crates/flujo/public-api.txt after a deliberate change

One line per public item: modules, structs and their public fields, enums and their variants, traits and their
methods, functions and inherent methods with their signatures, constants, type aliases, and the facade's
re-exports. A change to any of them shows as a diff, so the API does not change by accident.

rustdoc's JSON is an unstable format: it is produced with RUSTC_BOOTSTRAP=1 by the toolchain in use.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTING = os.path.join(ROOT, "crates", "flujo", "public-api.txt")
CRATES = ["flujo", "flujo-core", "flujo-engine", "flujo-skills", "flujo-store"]


def rustdoc_json(crate):
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(
        # Every feature: the optional parts (the SQLite and Postgres stores, YAML, models) are API too.
        ["cargo", "rustdoc", "-q", "-p", crate, "--lib", "--all-features", "--",
         "-Z", "unstable-options", "--output-format", "json"],
        cwd=ROOT, env=env, check=True,
    )
    with open(os.path.join(target, "doc", crate.replace("-", "_") + ".json")) as f:
        return json.load(f)


def ty(t):
    """A type as Rust source, close enough to see changes."""
    if t is None:
        return "()"
    if not isinstance(t, dict):
        return str(t)
    (kind, v), = t.items()
    if kind == "primitive":
        return v
    if kind == "generic":
        return v
    if kind == "resolved_path":
        name = v["path"]
        args = v.get("args")
        return name + generic_args(args)
    if kind == "borrowed_ref":
        lt = (v.get("lifetime") + " ") if v.get("lifetime") else ""
        return "&" + lt + ("mut " if v.get("is_mutable") else "") + ty(v["type"])
    if kind == "raw_pointer":
        return ("*mut " if v.get("is_mutable") else "*const ") + ty(v["type"])
    if kind == "slice":
        return "[" + ty(v) + "]"
    if kind == "array":
        return "[" + ty(v["type"]) + "; " + str(v["len"]) + "]"
    if kind == "tuple":
        return "(" + ", ".join(ty(x) for x in v) + ")"
    if kind == "impl_trait":
        return "impl " + " + ".join(bound(b) for b in v)
    if kind == "dyn_trait":
        return "dyn " + " + ".join(p["trait"]["path"] + generic_args(p["trait"].get("args")) for p in v["traits"])
    if kind == "qualified_path":
        return "<" + ty(v["self_type"]) + ">::" + v["name"]
    if kind == "function_pointer":
        return "fn(..)"
    return kind


def generic_args(args):
    if not args:
        return ""
    if "angle_bracketed" in args:
        a = args["angle_bracketed"]
        parts = []
        for x in a.get("args", []):
            if "type" in x:
                parts.append(ty(x["type"]))
            elif "lifetime" in x:
                parts.append(x["lifetime"])
            elif "const" in x:
                parts.append(str(x["const"].get("expr")))
        for c in a.get("constraints", []):
            binding = c.get("binding", {})
            if "equality" in binding and "type" in binding["equality"]:
                parts.append(c["name"] + " = " + ty(binding["equality"]["type"]))
        return "<" + ", ".join(parts) + ">" if parts else ""
    if "parenthesized" in args:
        p = args["parenthesized"]
        out = "(" + ", ".join(ty(x) for x in p.get("inputs", [])) + ")"
        if p.get("output"):
            out += " -> " + ty(p["output"])
        return out
    return ""


def bound(b):
    if "trait_bound" in b:
        tr = b["trait_bound"]["trait"]
        return tr["path"] + generic_args(tr.get("args"))
    if "outlives" in b:
        return b["outlives"]
    return "?"


def signature(f):
    sig = f["sig"]
    params = []
    for name, t in sig["inputs"]:
        if name == "self":
            r = t.get("borrowed_ref") if isinstance(t, dict) else None
            params.append(("&mut self" if r.get("is_mutable") else "&self") if r else "self")
        else:
            params.append(f"{name}: {ty(t)}")
    out = "(" + ", ".join(params) + ")"
    if sig.get("output"):
        out += " -> " + ty(sig["output"])
    h = f.get("header", {})
    return ("async " if h.get("is_async") else "") + "fn" + out


def listing(crate, doc):
    index = doc["index"]
    lines = set()
    name = crate.replace("-", "_")

    def item(i):
        return index.get(str(i))

    def walk(mod_id, path):
        m = item(mod_id)
        for child in m["inner"]["module"]["items"]:
            it = item(child)
            if it is None or it.get("visibility") != "public":
                continue
            visit(it, path)

    def exhaustive(it):
        # `#[non_exhaustive]` is part of the API: removing it lets users write literals that a new field breaks
        attrs = it.get("attrs") or []
        marked = any(a == "non_exhaustive" or (isinstance(a, str) and "non_exhaustive" in a) for a in attrs)
        return " #[non_exhaustive]" if marked else ""

    def visit(it, path):
        (kind, inner), = it["inner"].items()
        n = it.get("name")
        here = f"{path}::{n}" if n else path
        if kind == "module":
            lines.add(f"mod {here}")
            walk(it["id"], here)
        elif kind == "use":
            alias = inner.get("name") or n or "*"
            lines.add(f"pub use {path}::{alias} = {inner['source']}" + (" (glob)" if inner.get("is_glob") else ""))
        elif kind == "struct":
            lines.add(f"struct {here}{exhaustive(it)}")
            k = inner["kind"]
            if "plain" in k:
                for fid in k["plain"]["fields"]:
                    fld = item(fid)
                    if fld and fld.get("visibility") == "public":
                        lines.add(f"struct field {here}.{fld['name']}: {ty(fld['inner']['struct_field'])}")
            impls(inner.get("impls", []), here)
        elif kind == "enum":
            lines.add(f"enum {here}{exhaustive(it)}")
            for vid in inner["variants"]:
                var = item(vid)
                if var:
                    lines.add(f"enum variant {here}::{var['name']}")
            impls(inner.get("impls", []), here)
        elif kind == "trait":
            lines.add(f"trait {here}")
            for mid in inner["items"]:
                mt = item(mid)
                if mt and "function" in mt["inner"]:
                    lines.add(f"trait method {here}::{mt['name']} {signature(mt['inner']['function'])}")
        elif kind == "function":
            lines.add(f"fn {here} {signature(inner)}")
        elif kind == "constant":
            lines.add(f"const {here}: {ty(inner['type'])}")
        elif kind == "static":
            lines.add(f"static {here}: {ty(inner['type'])}")
        elif kind == "type_alias":
            lines.add(f"type {here} = {ty(inner['type'])}")
        elif kind == "macro":
            lines.add(f"macro {here}")

    def impls(ids, owner):
        for iid in ids:
            im = item(iid)
            if not im:
                continue
            inner = im["inner"]["impl"]
            if inner.get("trait") is None and not inner.get("is_synthetic") and not inner.get("blanket_impl"):
                for mid in inner["items"]:
                    mt = item(mid)
                    if mt and mt.get("visibility") == "public" and "function" in mt["inner"]:
                        lines.add(f"method {owner}::{mt['name']} {signature(mt['inner']['function'])}")
            elif inner.get("trait") is not None and not inner.get("is_synthetic") and not inner.get("blanket_impl"):
                tr = inner["trait"]["path"]
                if tr.split("::")[-1] in ("Debug", "Clone", "Default", "PartialEq", "Eq", "Hash", "Serialize",
                                          "Deserialize", "From", "Display", "Error", "Future", "Stream",
                                          "StepPolicy", "Skill", "SkillRegistry", "Store", "RunStore",
                                          "JournalStore", "BlobStore", "Telemetry", "Clock", "IdGen"):
                    lines.add(f"impl {tr}{generic_args(inner['trait'].get('args'))} for {owner}")

    walk(doc["root"], name)
    return sorted(lines)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "--check"
    out = []
    for crate in CRATES:
        out.append(f"# {crate}")
        out.extend(listing(crate, rustdoc_json(crate)))
    text = "\n".join(out) + "\n"
    if mode == "--update":
        with open(LISTING, "w") as f:
            f.write(text)
        print(f"wrote {LISTING} ({len(out)} lines)")
        return 0
    try:
        with open(LISTING) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    if old == text:
        print(f"public API unchanged ({len(out)} lines)")
        return 0
    import difflib
    sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), "public-api.txt (checked in)", "public API (now)"))
    print("\nThe public API changed. If that was deliberate, run scripts/public_api.py --update and commit the listing.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
