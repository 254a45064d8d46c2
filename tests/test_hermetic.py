"""The build sandbox without the host's folders (docs/recipes.md, "The build's view of the
host"): a build that needs none of the host's tools sees no /usr, /bin or /lib of the host,
only its inputs; /bin/sh and /usr/bin/env are its own declared shell and env; a tool it does
not declare is not found. A build of a host tool's user still sees the host, read-only.

The build's command is a small static program (a probe, built here with the host's musl
toolchain): it runs without any of the host's files, and reports what it sees."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.model.layout import Layout
from ixd.model.nodes import Node
from ixd.store.builder import declared_tools, run_build
from ixd.store.buildusers import DEFAULT_GROUP, BuildUserPool, load_pool
from ixd.store.confine import confinement_argv
from ixd.store.fstree import remove_tree
from ixd.wire.errors import BuildFailed
from tests.daemon_harness import make_reachable

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None or shutil.which("musl-gcc") is None,
                                reason="needs bubblewrap and musl-gcc (musl-tools)")

PROBE = r"""
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *seen(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 ? "yes" : "no";
}

static void link_of(FILE *f, const char *path) {
    char target[4096];
    ssize_t n = readlink(path, target, sizeof target - 1);
    target[n > 0 ? n : 0] = 0;
    fprintf(f, "%s -> %s\n", path, n > 0 ? target : "(none)");
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--hello") == 0) {  /* run as /bin/sh or env */
        printf("probe here\n");
        return 0;
    }
    char report[4096];
    snprintf(report, sizeof report, "%s/report", getenv("out"));
    mkdir(getenv("out"), 0755);
    FILE *f = fopen(report, "w");
    fprintf(f, "/usr/lib: %s\n/lib: %s\n/usr/bin/gcc: %s\n/etc/ld.so.cache: %s\n",
            seen("/usr/lib"), seen("/lib"), seen("/usr/bin/gcc"), seen("/etc/ld.so.cache"));
    link_of(f, "/bin/sh");
    link_of(f, "/usr/bin/env");
    fprintf(f, "PWD: %s\n", getenv("PWD") ? getenv("PWD") : "(unset)");
    fflush(f);
    /* a tool the build did not declare: looked up on PATH, as a shell would */
    pid_t child = fork();
    if (child == 0) {
        execlp("gcc", "gcc", "--version", (char *)0);
        fprintf(f, "gcc: %s\n", strerror(errno));
        fflush(f);
        _exit(127);
    }
    int status;
    waitpid(child, &status, 0);
    /* /bin/sh runs the declared shell */
    child = fork();
    if (child == 0) {
        int fd = fileno(f);
        dup2(fd, 1);
        execl("/bin/sh", "sh", "--hello", (char *)0);
        _exit(126);
    }
    waitpid(child, &status, 0);
    fclose(f);
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("probe")
    (folder / "probe.c").write_text(PROBE)
    subprocess.run(["musl-gcc", "-static", "-O1", "-o", folder / "probe", folder / "probe.c"],
                   check=True)
    return folder / "probe"


@pytest.fixture
def layout() -> Iterator[Layout]:
    # not under /tmp: a confined build's /tmp is its own scratch
    top = Path(tempfile.mkdtemp(prefix="ix-hermetic-", dir="/var/tmp"))
    layout = Layout(top / "ix")
    layout.ensure()
    make_reachable(layout.root)
    yield layout
    remove_tree(top)


def tools_entry(layout: Layout, probe: Path) -> Path:
    """A store entry of declared tools: the probe, and under the names sh and env."""
    entry = layout.store_dir(uuid.uuid4().hex, "bin", "tools")
    (entry / "bin").mkdir(parents=True)
    for name in ("probe", "sh", "env"):
        shutil.copy(probe, entry / "bin" / name)
    for path in (entry, entry / "bin"):
        path.chmod(0o755)
    return entry


def probe_node(layout: Layout, tools: Path, *, host_view: bool) -> Node:
    uid = uuid.uuid4().hex
    return Node(
        uid=uid, kind="build", name="bin/probe", deps=(), inputs=(str(tools),),
        outputs=(str(layout.store_dir(uid, "bin", "probe")),),
        command=(str(tools / "bin" / "probe"),),
        env={"PATH": f"{tools}/bin"}, host_view=host_view,
    )


async def run_probe(layout: Layout, node: Node) -> dict[str, str]:
    async with BuildUserPool(load_pool(DEFAULT_GROUP)).take() as user:
        await run_build(node, layout, confine=True, make_thrs=1, user=user)
    report = (Path(node.outputs[0]) / "report").read_text()
    return dict(line.split(": ", 1) if ": " in line else (line, "") for line in
                report.splitlines())


async def test_a_build_without_the_host_view_sees_only_its_inputs(
        layout: Layout, probe: Path) -> None:
    tools = tools_entry(layout, probe)
    seen = await run_probe(layout, probe_node(layout, tools, host_view=False))
    assert seen["/usr/lib"] == "no" and seen["/lib"] == "no"
    assert seen["/usr/bin/gcc"] == "no" and seen["/etc/ld.so.cache"] == "no"
    # the declared shell and env, store inputs, at the paths scripts name
    assert f"/bin/sh -> {tools}/bin/sh" in seen
    assert f"/usr/bin/env -> {tools}/bin/env" in seen
    # not declared: not found (the host's gcc is not there to be found)
    assert seen["gcc"] == "No such file or directory"
    assert "probe here" in seen


async def test_a_build_with_the_host_view_sees_the_hosts_folders(
        layout: Layout, probe: Path) -> None:
    tools = tools_entry(layout, probe)
    seen = await run_probe(layout, probe_node(layout, tools, host_view=True))
    assert seen["/usr/lib"] == "yes"
    assert f"/bin/sh -> {tools}/bin/sh" not in seen  # the host's own
    if shutil.which("gcc", path="/usr/bin"):
        assert seen["/usr/bin/gcc"] == "yes"


async def test_a_build_with_no_shell_has_no_bin_sh(layout: Layout, probe: Path) -> None:
    tools = tools_entry(layout, probe)
    (tools / "bin" / "sh").unlink()
    (tools / "bin" / "env").unlink()
    node = probe_node(layout, tools, host_view=False)
    seen = await run_probe(layout, node)
    assert "/bin/sh -> (none)" in seen and "/usr/bin/env -> (none)" in seen
    assert "probe here" not in seen


def test_declared_tools_come_from_the_inputs_on_path_only(tmp_path: Path) -> None:
    """A PATH folder outside the node's inputs (the host's) is never linked as /bin/sh."""
    first, second = tmp_path / "a", tmp_path / "b"
    for entry in (first, second):
        (entry / "bin").mkdir(parents=True)
    (second / "bin" / "sh").write_text("")
    (first / "bin" / "env").write_text("")
    node = Node(uid="u", kind="build", name="n", deps=(), inputs=(str(first), str(second)),
                outputs=("/nonexistent",), command=("x",),
                env={"PATH": f"/usr/bin:{first}/bin:{second}/bin"}, host_view=False)
    assert declared_tools(node) == [(f"{second}/bin/sh", "/bin/sh"),
                                    (f"{first}/bin/env", "/usr/bin/env")]


def test_the_hermetic_sandbox_binds_none_of_the_hosts_system_folders() -> None:
    argv = confinement_argv(net=False, host_view=False, links=[("/ix/s/x/bin/sh", "/bin/sh")])
    binds = {argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--ro-bind-try")}
    assert not binds & {"/usr", "/bin", "/lib", "/lib64", "/etc/alternatives",
                        "/etc/ld.so.cache"}
    assert ["--symlink", "/ix/s/x/bin/sh", "/bin/sh"] == argv[argv.index("--symlink"):][:3]
    host = confinement_argv(net=False)
    assert "/usr" in {host[i + 1] for i, a in enumerate(host) if a == "--ro-bind"}


async def test_an_undeclared_shell_script_fails_with_not_found(
        layout: Layout, probe: Path) -> None:
    """`/bin/sh -c` with no shell declared: the command itself is not found."""
    tools = tools_entry(layout, probe)
    (tools / "bin" / "sh").unlink()
    (tools / "bin" / "env").unlink()
    node = dataclasses.replace(probe_node(layout, tools, host_view=False),
                               command=("/bin/sh", "-c", "true"))
    with pytest.raises(BuildFailed, match=r"(?s)exit status 1.*/bin/sh: No such file"):
        async with BuildUserPool(load_pool(DEFAULT_GROUP)).take() as user:
            await run_build(node, layout, confine=True, make_thrs=1, user=user)


def _recipe(overlay: Path, name: str, body: str, script: str = '{"exec": ["/bin/sh"]}'
            ) -> None:
    path = overlay / name / "ix.sh"
    path.parent.mkdir(parents=True)
    path.write_text("{% extends '//die/base.json' %}\n"
                    f"{{% block script_json %}}{script}{{% endblock %}}\n{body}")


def test_a_build_sees_the_host_only_when_it_or_one_of_its_tools_asks(tmp_path: Path) -> None:
    """`host_view build` (stage 0's captures) is for the recipe's own build; `tool` (the
    bld/host/* wrappers) for every build that uses it as a tool, too."""
    from ixd.model.selector import parse_selector
    from ixd.recipes.packages import PackageGraph
    from ixd.recipes.tree import RecipeTree
    from tests.daemon_harness import PKGS

    overlay = tmp_path / "overlay"
    _recipe(overlay, "bld/capture", "{% block host_view %}build{% endblock %}")
    _recipe(overlay, "bld/wrapper", "{% block host_view %}tool{% endblock %}")
    _recipe(overlay, "bld/hub", "{% block run_deps %}bld/wrapper{% endblock %}", script="")
    _recipe(overlay, "bin/on-capture", "{% block bld_tool %}bld/capture{% endblock %}")
    _recipe(overlay, "bin/on-wrapper", "{% block bld_tool %}bld/wrapper{% endblock %}")
    _recipe(overlay, "bin/on-hub", "{% block bld_tool %}bld/hub{% endblock %}")
    _recipe(overlay, "lib/on-wrapper", "{% block bld_libs %}bin/on-wrapper{% endblock %}")
    graph = PackageGraph(RecipeTree([overlay, PKGS]), tmp_path / "store")

    def sees_host(name: str) -> bool:
        node = graph.load(parse_selector(name)).node
        assert node is not None
        return node.host_view

    assert sees_host("bld/capture") and sees_host("bld/wrapper")
    assert not sees_host("bin/on-capture")
    assert sees_host("bin/on-wrapper") and sees_host("bin/on-hub")  # a hub's run deps too
    # a library built with host tools is only files to what links it
    assert not sees_host("lib/on-wrapper")
    # the view is part of the uid: a build that sees the host is another build
    assert graph.load(parse_selector("bin/on-capture")).uid != \
        graph.load(parse_selector("bin/on-wrapper")).uid
