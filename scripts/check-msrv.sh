#!/usr/bin/env bash
# MSRV check without an older toolchain: reads `cargo metadata` and fails if a dependency that
# a build of this crate compiles (normal and build dependencies, all features, every target
# platform; dev-dependencies excluded) declares a `rust-version` above the crate's own. The
# crate's `rust-version` must also be at least the highest one declared (it states the truth,
# not a wish). Only the declared `rust-version`s are compared: a dependency that declares none
# is not checked, and the crate's own code is checked by building it with the toolchain CI has.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --all-features --locked | python3 -c '
import json, sys

def ver(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = next(p for p in meta["packages"] if p["name"] == "agent-mandate")
ours = root.get("rust_version")
if not ours:
    sys.exit("check-msrv: Cargo.toml declares no rust-version")

seen, todo = set(), [root["id"]]
while todo:
    node = nodes[todo.pop()]
    for dep in node["deps"]:
        kinds = {k["kind"] for k in dep["dep_kinds"]}
        if kinds - {"dev"} and dep["pkg"] not in seen:
            seen.add(dep["pkg"])
            todo.append(dep["pkg"])

declared = sorted(
    ((ver(packages[i]["rust_version"]), packages[i]["name"], packages[i]["version"])
     for i in seen if packages[i].get("rust_version")),
    reverse=True,
)
highest = declared[0][0] if declared else (0, 0, 0)
above = [d for d in declared if d[0] > ver(ours)]
for v, name, version in above:
    print(f"check-msrv: {name} {version} needs Rust {v[0]}.{v[1]}.{v[2]} > rust-version {ours}")
top = declared[0][1] if declared else "none"
print(f"check-msrv: {len(seen)} dependencies, {len(declared)} declare a rust-version; "
      f"the highest is {highest[0]}.{highest[1]}.{highest[2]} ({top}); ours is {ours}", flush=True)
if above:
    sys.exit("check-msrv: raise rust-version in Cargo.toml to the highest one above")
'
