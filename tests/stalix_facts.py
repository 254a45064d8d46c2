"""Facts about a build graph that stal/IX's `ix` and ixd must agree on (issue 11).

Both graphs are reduced to the same shape: for every build node, the package's file name
(`bin-curl`, stal/IX's `pkg_name`), a hash of its build script with store paths and
machine-specific settings masked, and the names in its IX_B_DIR / IX_H_DIR / IX_T_DIR in
order. Fetches are reduced to their URLs. `tests/stalix_golden/record.py` makes these facts
from the reference's `IX_DUMP_GRAPH=1` output; `tests/test_stalix_compat.py` makes them from
ix's packages and compares.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

#: a store dir of stal/IX (`/ix/store/<22 base-62>-NAME`) or of ix (`.../<32 hex>-NAME`)
_REF_DIR = re.compile(r"/ix/store/[0-9A-Za-z]{22}-([A-Za-z0-9+._-]*)")
_ENV_LISTS = ("IX_B_DIR", "IX_H_DIR", "IX_T_DIR")
#: a bare uid in a script (`intro(x).uid`): stal/IX's 22 base-62 digits, ix's 32 hex digits
_REF_UID = re.compile(r"\b[0-9A-Za-z]{22}\b")
_IX_UID = re.compile(r"\b[0-9a-f]{32}\b")


def mask(text: str, store_dir: re.Pattern[str], settings: Mapping[str, str]) -> str:
    """The text with every store dir reduced to `<store>/NAME`, every bare uid to `<uid>` and
    every setting's value (longest first) to `<NAME>`."""
    text = store_dir.sub(lambda m: f"<store>/{m.group(1)}", text)
    text = (_REF_UID if store_dir is _REF_DIR else _IX_UID).sub("<uid>", text)
    for key, value in sorted(settings.items(), key=lambda kv: -len(kv[1])):
        if value:
            text = text.replace(value, f"<{key}>")
    return text


def script_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dir_names(value: str, store_dir: re.Pattern[str]) -> list[str]:
    return [m.group(1) for m in store_dir.finditer(value)]


def node_fact(name: str, script: str, env: Mapping[str, str], store_dir: re.Pattern[str],
              settings: Mapping[str, str]) -> dict[str, Any]:
    fact: dict[str, Any] = {"name": name,
                            "script": script_hash(mask(script, store_dir, settings))}
    for key in _ENV_LISTS:
        fact[key] = dir_names(env.get(key, ""), store_dir)
    return fact


def reference_facts(graph: Mapping[str, Any], settings: Mapping[str, str]) -> dict[str, Any]:
    """Facts from stal/IX's dumped graph (`{"nodes": [...]}`)."""
    builds = []
    urls = []
    for node in graph["nodes"]:
        out = node["out_dir"][0].rsplit("/", 1)[1]
        name = out.split("-", 1)[1]
        if name.startswith("url-"):
            urls.append(node["cmd"][0]["args"][4])
        elif name != "lnk":
            cmd = node["cmd"][0]
            builds.append(node_fact(name, cmd["stdin"], cmd["env"], _REF_DIR, settings))
    return summarise(builds, urls)


def summarise(builds: Iterable[dict[str, Any]], urls: Iterable[str]) -> dict[str, Any]:
    facts = sorted(builds, key=lambda f: (f["name"], f["script"], repr(f)))
    return {
        "build_nodes": len(facts),
        "names": sorted({f["name"] for f in facts}),
        "urls": sorted(set(urls)),
        "nodes": facts,
    }


def ix_facts(packages: Iterable[Any], store: str, settings: Mapping[str, str]) -> dict[str, Any]:
    """Facts from ix's packages (`walk_closure` of the targets) built into `store`."""
    store_dir = re.compile(re.escape(store.rstrip("/")) + r"/[0-9a-f]{32}-([A-Za-z0-9+._-]*)")
    builds = []
    urls = []
    for package in packages:
        node = package.node
        if node is None:
            continue
        name = node.outputs[0].rsplit("/", 1)[1].split("-", 1)[1]
        builds.append(node_fact(name, node.stdin, node.env, store_dir, settings))
        urls.extend(s.url for s in node.sources)
    return summarise(builds, urls)


def differences(expected: Mapping[str, Any], actual: Mapping[str, Any],
                limit: int = 20) -> list[str]:
    """What differs, at most `limit` lines, most telling first."""
    out: list[str] = []
    for key in ("names", "urls"):
        missing = sorted(set(expected[key]) - set(actual[key]))
        extra = sorted(set(actual[key]) - set(expected[key]))
        if missing:
            out.append(f"{key} missing ({len(missing)}): {missing[:8]}")
        if extra:
            out.append(f"{key} extra ({len(extra)}): {extra[:8]}")
    if expected["build_nodes"] != actual["build_nodes"]:
        out.append(f"build nodes: {actual['build_nodes']}, expected {expected['build_nodes']}")
    want = {_key(f) for f in expected["nodes"]}
    have = {_key(f) for f in actual["nodes"]}
    for fact in expected["nodes"]:
        if _key(fact) not in have and len(out) < limit:
            near = [f for f in actual["nodes"] if f["name"] == fact["name"]]
            what = "no node" if not near else ", ".join(
                k for k in ("script", *_ENV_LISTS) if all(f[k] != fact[k] for f in near))
            out.append(f"node {fact['name']} (script {fact['script']}) differs: {what}")
    out.extend(f"extra node {f['name']} (script {f['script']})" for f in actual["nodes"]
               if _key(f) not in want and len(out) < limit)
    return out[:limit]


def _key(fact: Mapping[str, Any]) -> str:
    return repr(sorted(fact.items()))
