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
from collections import Counter
from collections.abc import Container, Iterable, Mapping
from typing import Any

#: a store dir of stal/IX (`/ix/store/<22 base-62>-NAME`) or of ix (`.../<32 hex>-NAME`)
_REF_DIR = re.compile(r"/ix/store/[0-9A-Za-z]{22}-([A-Za-z0-9+._-]*)")
_ENV_LISTS = ("IX_B_DIR", "IX_H_DIR", "IX_T_DIR")
#: a bare uid in a script (`intro(x).uid`): stal/IX's 22 base-62 digits, ix's 32 hex digits
_REF_UID = re.compile(r"\b[0-9A-Za-z]{22}\b")
_REF_INTRO = re.compile(r"^# [0-9A-Za-z]{22}$", re.MULTILINE)
_IX_UID = re.compile(r"\b[0-9a-f]{32}\b")


def mask(text: str, store_dir: re.Pattern[str], settings: Mapping[str, str],
         uids: Container[str] = ()) -> str:
    """The text with every store dir reduced to `<store>/NAME`, every bare uid (stal/IX's
    form, or one of `uids`) to `<uid>` and every setting's value (longest first) to
    `<NAME>`."""
    text = store_dir.sub(lambda m: f"<store>/{m.group(1)}", text)
    if store_dir is _REF_DIR:
        # stal/IX's hub uids are in no node: a `# UID` line is etc/services/runit's intro()
        text = _REF_INTRO.sub("# <uid>", text)
        text = _REF_UID.sub(lambda m: "<uid>" if m.group(0) in uids else m.group(0), text)
    else:
        text = _IX_UID.sub(lambda m: "<uid>" if m.group(0) in uids else m.group(0), text)
    for key, value in sorted(settings.items(), key=lambda kv: -len(kv[1])):
        if value:
            text = text.replace(value, f"<{key}>")
    return text


def script_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dir_names(value: str, store_dir: re.Pattern[str]) -> list[str]:
    return [m.group(1) for m in store_dir.finditer(value)]


def node_fact(name: str, script: str, env: Mapping[str, str], store_dir: re.Pattern[str],
              settings: Mapping[str, str], uids: Container[str] = ()) -> str:
    """`NAME SCRIPT-HASH DIRS-HASH`: one build node, its masked script and the names in its
    IX_B_DIR, IX_H_DIR and IX_T_DIR, in order."""
    dirs = [dir_names(env.get(key, ""), store_dir) for key in _ENV_LISTS]
    return (f"{name} {script_hash(mask(script, store_dir, settings, uids))} "
            f"{script_hash(repr(dirs))}")


def reference_facts(graph: Mapping[str, Any], settings: Mapping[str, str]) -> dict[str, Any]:
    """Facts from stal/IX's dumped graph (`{"nodes": [...]}`)."""
    builds = []
    urls = []
    uids = {node["uid"] for node in graph["nodes"] if "uid" in node}
    for node in graph["nodes"]:
        out = node["out_dir"][0].rsplit("/", 1)[1]
        name = out.split("-", 1)[1]
        if name.startswith("url-"):
            urls.append(node["cmd"][0]["args"][4])
        elif name != "lnk":
            cmd = node["cmd"][0]
            builds.append(node_fact(name, cmd["stdin"], cmd["env"], _REF_DIR, settings, uids))
    return summarise(builds, urls)


def summarise(builds: Iterable[str], urls: Iterable[str]) -> dict[str, Any]:
    facts = sorted(builds)
    return {
        "build_nodes": len(facts),
        "names": sorted({f.split(" ", 1)[0] for f in facts}),
        "urls": sorted(set(urls)),
        "nodes": facts,
    }


def ix_facts(packages: Iterable[Any], store: str, settings: Mapping[str, str],
             uids: Container[str]) -> dict[str, Any]:
    """Facts from ix's packages (`walk_closure` of the targets) built into `store`; `uids`:
    those of every package loaded (a script may name one, `intro(x).uid`)."""
    store_dir = re.compile(re.escape(store.rstrip("/")) + r"/[0-9a-f]{32}-([A-Za-z0-9+._-]*)")
    builds = []
    urls = []
    for package in packages:
        node = package.node
        if node is None:
            continue
        name = node.outputs[0].rsplit("/", 1)[1].split("-", 1)[1]
        builds.append(node_fact(name, node.stdin, node.env, store_dir, settings, uids))
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
    want = Counter(expected["nodes"])
    have = Counter(actual["nodes"])
    for fact in sorted((want - have).elements()):
        name, script, dirs = fact.split(" ")
        near = [f.split(" ") for f in have if f.startswith(name + " ")]
        what = ("no node" if not near else "script" if all(f[1] != script for f in near)
                else "IX_*_DIR" if all(f[2] != dirs for f in near) else "count")
        out.append(f"node {name} (script {script}) differs: {what}")
    out.extend(f"extra node {f}" for f in sorted((have - want).elements()))
    return out[:limit]
