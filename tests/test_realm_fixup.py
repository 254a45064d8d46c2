"""stal/IX's `target_realm` flag and realm fix-up hooks through a real ixd (issues 11 and 27):
a realm's packages see `target_realm`; a package's `fix/*.sh` hooks run in the realm, with
the tools `fix.deps` name if any, confined as a build user; the realm is the whole tree they
leave (files made, links made, files moved and removed), with the daemon's own `meta.json`
and `env`; the hooks, their folder and their tools are not in it.

Each of the nine hook shapes of stal/IX's tree that name no tools is recreated here as
stal/IX's recipe writes it: etc/concat, etc/sudoer/fix, set/enclave/etc,
bin/openresolv/runit/scripts, bin/runit/sys/etc, bin/kernel/gengrub, bin/clang/env/wrapper,
and the die/fix/wrapper.sh wrappers of bin/sudo/er and bin/xdg/er (a program moved aside, a
script in its place that runs it by the realm's own path). With stal/IX's tree at hand, its
own recipe files of the nine run too, unchanged (`live`: their `//die/gen.sh` is ix's plain
shell recipe), each hook as stal/IX ships it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.store.fstree import remove_tree
from ixd.store.treehash import tree_hash
from tests.daemon_harness import RunningDaemon, start_daemon
from tests.test_stalix_compat import STALIX_PKGS

RECIPES = {
    # a tool the hooks run: lists a folder's files (everything linked is a symlink)
    "bld/fixtool": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p "$out/bin"
printf '#!/bin/sh\nfind "$1" -type l | LC_ALL=C sort\n' > "$out/bin/ix-index"
chmod +x "$out/bin/ix-index"
{% endblock %}
""",
    # data with a hook: an index of share/ in the realm, made by bld/fixtool
    "aux/fixdemo": r"""{% extends '//die/sh.sh' %}
{% block fix_deps %}
bld/fixtool
{% endblock %}
{% block install %}
mkdir -p "$out/fix" "$out/share/demo"
echo a > "$out/share/demo/a.txt"
echo 'ix-index share > share/demo/index.txt' > "$out/fix/index.sh"
echo 'echo ignored > share/demo/not-a-hook.txt' > "$out/fix/notes.txt"
{% endblock %}
""",
    # brings aux/fixdemo only in a realm, as stal/IX's lib/glib/ix brings its fix-up
    "bin/realmy": r"""{% extends '//die/sh.sh' %}
{% block run_data %}
{% if target_realm %}
aux/fixdemo
{% endif %}
{% endblock %}
{% block install %}
mkdir -p "$out/share/realmy"
echo x > "$out/share/realmy/x"
{% endblock %}
""",
    # a hostile hook: a link where the daemon writes meta.json, a setuid file, a host program
    "bin/t/hostile": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p "$out/fix"
cat > "$out/fix/evil.sh" << 'IX'
id -u > who
ln -s /etc/passwd meta.json
mkdir env
echo x > setuid-file
chmod 4755 setuid-file
{% if dynamic %}
cp /bin/ls ls-copy
{% endif %}
IX
{% endblock %}
""",
}

#: stal/IX's hook shapes, each written as its recipe writes it (the hooks' text is theirs)
SHAPES = {
    # etc/concat: every etc/*.d folder becomes one file of its parts; shells sorted, once each
    "etc/t/concat": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p ${out}/fix
cat << 'IX' > ${out}/fix/01-concat.sh
set -xue

cd etc

find -type d -name '*.d' | grep -v dbus-1 | grep -v grub | while read l; do
    cat ${l}/* > ${l%.d}
    rm -r ${l}
done

if test -f shells; then
    cat shells | sort | uniq > _
    mv _ shells
fi
IX
{% endblock %}
""",
    "etc/t/profile/a": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p ${out}/etc/profile.d
echo 'export A=1' > ${out}/etc/profile.d/a.sh
printf '/bin/sh\n/bin/bash\n/bin/sh\n' > ${out}/etc/shells
{% endblock %}
""",
    "etc/t/profile/b": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p ${out}/etc/profile.d
echo 'export B=2' > ${out}/etc/profile.d/b.sh
{% endblock %}
""",
    # etc/sudoer/record + etc/sudoer/fix: a key in etc/sud.d (concatenated into etc/sud by
    # etc/concat), moved where sudo looks for it
    "etc/t/sudoer/record": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p ${out}/etc/sud.d
echo 'ssh-ed25519 KEY alice' > ${out}/etc/sud.d/alice
{% endblock %}
""",
    "etc/t/sudoer/fix": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p ${out}/fix

cat << IX > ${out}/fix/sud.sh
set -xue

if test -f etc/sud; then
    mkdir -p etc/sudo
    mv etc/sud etc/sudo/authorized_keys
    chmod 0600 etc/sudo/authorized_keys
    chmod 0700 etc/sudo
fi
IX
{% endblock %}
""",
    # set/enclave/etc: links out of the realm, to the system realm's files
    "set/t/enclave/etc": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir ${out}/fix

cat << IX > ${out}/fix/00-symlinks.sh
cd etc
for x in ssl passwd group hostname machine-id hosts profile zoneinfo; do
    ln -s /ix/realm/system/etc/\${x} \${x}
done
IX
{% endblock %}
""",
    "etc/t/motd": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p ${out}/etc
echo hello > ${out}/etc/motd
{% endblock %}
""",
    # bin/openresolv/runit/scripts: a file, and a link the hook makes
    "bin/t/openresolv": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir ${out}/etc ${out}/fix

cat << IX > ${out}/etc/resolvconf.conf
resolv_conf=/var/run/resolvconf/resolv.conf
IX

cat << IX > ${out}/fix/resolv_conf_symlink.sh
ln -s /var/run/resolvconf/resolv.conf etc/resolv.conf
IX
{% endblock %}
""",
    # bin/runit/sys/etc: etc/runit/1 made of 1.d's parts, the parts removed
    "bin/t/runit/etc": r"""{% extends '//die/sh.sh' %}
{% block install %}
cd ${out}
mkdir fix
cat << 'IX' > fix/00-run1.sh
cd etc/runit

cat - $(ls 1.d/*) << EOF > 1
#!/bin/sh
EOF

rm -r 1.d

chmod +x 1
IX
mkdir -p etc/runit/1.d; cd etc/runit/1.d
echo 'echo one' > 00-00-env.sh
echo 'echo two' > 01-00-mount.sh
{% endblock %}
""",
    # bin/kernel/gengrub: a boot menu of the kernels the realm has
    "bin/t/kernel/gengrub": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir ${out}/fix
cat << 'IX' | sed -e 's|__flags__|{{kernel_boot_flags}}|' > ${out}/fix/gen_grub_menu.sh
mkdir -p etc

cat << EOF > etc/grub.cfg
timeout=5
EOF

ls bin/kernel-* | sort -r | while read l; do
    cat << EOF >> etc/grub.cfg
menuentry "${l}" {
    linux /${l} ro __flags__
}
EOF
done
IX
{% endblock %}
""",
    "bin/t/kernels": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p ${out}/bin
echo 5 > ${out}/bin/kernel-5.10
echo 6 > ${out}/bin/kernel-6.1
{% endblock %}
""",
    # bin/clang/env/wrapper: a compiler wrapper that sources the realm's env, moved into bin/
    # and pointed at the realm
    "bin/t/clang/env/wrapper": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir ${out}/fix
cd ${out}/fix

cat << IX > cc
#!/usr/bin/env sh
set -e
. __realm__/env
exec __realm__/bin/clang \${CFLAGS:-} "\${@}"
IX

cat << IX > prepare-compiler.sh
mkdir -p bin
mv fix/cc bin/
sed -e "s|__realm__|\${PWD}|g" -i bin/cc
IX

chmod +x *
{% endblock %}
""",
    "bin/t/clang": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p ${out}/bin
printf '#!/bin/sh\necho "clang $*"\n' > ${out}/bin/clang
chmod +x ${out}/bin/clang
{% endblock %}
""",
    # die/fix/wrapper.sh, as stal/IX's: bin/sudo/er and bin/xdg/er extend it
    "die/fix/wrapper.sh": r"""{% extends '//die/sh.sh' %}
{% block install %}
cd ${out}; mkdir -p fix; cd fix

cat << IX > {{uniq_id}}-{{wrap}}
#!/usr/bin/env sh
{% block wrapper_env %}
{% endblock %}
exec {{self.wrapper().strip()}} "__realm__/bin/bin_{{uniq_id}}/{{wrap}}" "\$@"
IX

cat << IX > {{uniq_id}}-{{wrap}}.sh
set -uex
mkdir -p bin/bin_{{uniq_id}}
mv bin/{{wrap}} bin/bin_{{uniq_id}}/
cat fix/{{uniq_id}}-{{wrap}} | sed -e "s|__realm__|\${PWD}|" > bin/{{wrap}}
chmod +x bin/{{wrap}}
IX
{% endblock %}
""",
    "bin/t/sudo/er": r"""{% extends '//die/fix/wrapper.sh' %}
{% block wrapper %}
sudo
{% endblock %}
""",
    "bin/t/xdg/er": r"""{% extends '//die/fix/wrapper.sh' %}
{% block wrapper %}
{{prefix}}
{% endblock %}
{% block wrapper_env %}
export PATH="__realm__/bin:\${PATH}"
export XDG_DATA_DIRS="__realm__/share:\${XDG_DATA_DIRS:-}"
{% endblock %}
""",
    # what the wrappers wrap: a stand-in for sudo, and a program
    "bin/t/fakesudo": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p ${out}/bin
printf '#!/bin/sh\necho "sudo runs $1"\nexec "$@"\n' > ${out}/bin/sudo
chmod +x ${out}/bin/sudo
{% endblock %}
""",
    "bin/t/demo": r"""{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p ${out}/bin
printf '#!/bin/sh\necho "{{greeting}} $* from $0"\necho "XDG=${XDG_DATA_DIRS:-}"\n' \
    > ${out}/bin/{{prog}}
chmod +x ${out}/bin/{{prog}}
{% endblock %}
""",
}

#: realms of the shapes: the etc ones, the links out of the realm, the wrappers
REALMS = {
    "etcs": ["etc/t/profile/a", "etc/t/profile/b", "etc/t/sudoer/record", "etc/t/sudoer/fix",
             "etc/t/concat"],
    "enclave": ["etc/t/motd", "set/t/enclave/etc", "bin/t/openresolv", "bin/t/runit/etc",
                "bin/t/kernels", "bin/t/kernel/gengrub(kernel_boot_flags=quiet)"],
    "wraps": ["bin/t/clang", "bin/t/clang/env/wrapper", "bin/t/fakesudo",
              "bin/t/demo(greeting=hi,prog=demo)", "bin/t/sudo/er(wrap=demo)",
              "bin/t/demo(greeting=yo,prog=xdemo)", "bin/t/xdg/er(prefix=env,wrap=xdemo)"],
}


#: stal/IX's own recipes of the nine hook shapes (and the template two of them extend)
LIVE = ("etc/concat", "etc/sudoer/fix", "set/enclave/etc", "bin/openresolv/runit/scripts",
        "bin/runit/sys/etc", "bin/kernel/gengrub", "bin/clang/env/wrapper", "bin/sudo/er",
        "bin/xdg/er")

#: realms of stal/IX's own hook recipes, with the shapes' stand-ins for what they fix up
LIVE_REALMS = {
    "etcs": ["etc/t/profile/a", "etc/t/profile/b", "etc/t/sudoer/record", "etc/sudoer/fix",
             "bin/runit/sys/etc", "etc/concat"],
    "enclave": ["etc/t/motd", "set/enclave/etc", "bin/openresolv/runit/scripts",
                "bin/t/kernels", "bin/kernel/gengrub(kernel_boot_flags=quiet)"],
    "wraps": ["bin/t/clang", "bin/clang/env/wrapper", "bin/t/fakesudo",
              "bin/t/demo(greeting=hi,prog=demo)", "bin/sudo/er(wrap=demo)",
              "bin/t/demo(greeting=yo,prog=xdemo)", "bin/xdg/er(prefix=env,wrap=xdemo)"],
}


def write_overlay(overlay: Path, recipes: dict[str, str]) -> None:
    for name, text in recipes.items():
        path = overlay / name if name.endswith(".sh") else overlay / name / "ix.sh"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture(scope="module")
def daemon() -> Iterator[RunningDaemon]:
    top = Path(tempfile.mkdtemp(prefix="ix-fixup-", dir="/var/tmp"))
    overlay = top / "overlay"
    write_overlay(overlay, {**RECIPES, **SHAPES})
    running = start_daemon(top / "root", overlays=(overlay, Path("pkgs").resolve()))
    try:
        yield running
        assert running.stop() == 0, running.log.read_text()
    finally:
        running.stop()
        remove_tree(top)


@pytest.fixture(scope="module")
def shapes(daemon: RunningDaemon) -> dict[str, Path]:
    """The realms of the shapes, made (the realm links' targets: their store entries)."""
    made = {}
    for realm, packages in REALMS.items():
        daemon.ixc("mut", realm, *(f"+{p}" for p in packages))
        made[realm] = daemon.realm(realm).resolve()
    return made


def regular(path: Path) -> bool:
    """A file of the realm's own (made by a hook), not a link to a package's."""
    return stat.S_ISREG(os.lstat(path).st_mode)


def test_a_realm_runs_the_fix_hooks_of_its_packages(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "fixa", "+bin/realmy")
    realm = daemon.realm("fixa")
    assert (realm / "share" / "demo" / "a.txt").read_text() == "a\n"
    # the hook ran in the whole realm (it saw bin/realmy's files) with bld/fixtool on PATH;
    # what it made is a file of the realm's own
    index = realm / "share" / "demo" / "index.txt"
    assert index.read_text().split() == ["share/demo/a.txt", "share/realmy/x"]
    assert regular(index)
    # only *.sh files of fix/ are hooks; the folder and the tool stay out of the realm
    assert not (realm / "share" / "demo" / "not-a-hook.txt").exists()
    assert not (realm / "fix").exists() and not (realm / "bin" / "ix-index").exists()
    meta = json.loads((realm / "meta.json").read_text())
    assert meta["fixers"] == ["bld/fixtool"]
    assert any("target_realm=fixa" in p for p in meta["packages"])
    # the tool is not linked, nor kept from gc by the realm
    assert not any(d.endswith("-bin-fixtool") for d in meta["store_dirs"])


def test_the_hooks_run_as_a_build_with_a_log(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "fixa", "+bin/realmy")
    uid = daemon.realm("fixa").resolve().name.split("-", 1)[0]
    assert "ix: run hooks from index.sh" in daemon.ixc("log", uid).stdout
    builds = json.loads(daemon.ixc("--json", "builds").stdout)["builds"]
    assert any(b["uid"] == uid and b["state"] == "valid" for b in builds)


def test_plain_plans_are_in_the_ephemeral_realm(daemon: RunningDaemon) -> None:
    # as stal/IX's `ix build`: its realm `ephemeral`, so bin/realmy brings aux/fixdemo
    summary = json.loads(daemon.ixc("plan", "--summary", "bin/realmy").stdout)
    assert "bin/realmy" in summary["packages"]
    assert "aux/fixdemo" in summary["packages"]
    # outside any realm (the flag set empty) it does not
    summary = json.loads(daemon.ixc("plan", "--summary", "bin/realmy(target_realm=)").stdout)
    assert "aux/fixdemo" not in summary["packages"]
    # a realm whose packages ship no hooks is assembled as ever: links, meta.json, env
    daemon.ixc("mut", "plain", "+bin/realmy(target_realm=)")
    realm = daemon.realm("plain")
    assert (realm / "share" / "realmy" / "x").is_symlink()
    assert not (realm / "share" / "demo").exists()
    assert "fixers" not in json.loads((realm / "meta.json").read_text())


def test_concat_and_sudoer(shapes: dict[str, Path]) -> None:
    etc = shapes["etcs"] / "etc"
    # etc/concat: each *.d folder is one file of its parts now, the folder gone
    assert regular(etc / "profile")
    assert (etc / "profile").read_text() == "export A=1\nexport B=2\n"
    assert not (etc / "profile.d").exists() and not (etc / "sud.d").exists()
    assert (etc / "shells").read_text() == "/bin/bash\n/bin/sh\n"
    # etc/sudoer/fix, after it (hooks run in name order): etc/sud moved where sudo looks
    keys = etc / "sudo" / "authorized_keys"
    assert regular(keys) and keys.read_text() == "ssh-ed25519 KEY alice\n"
    assert not (etc / "sud").exists()


def test_enclave_openresolv_runit_and_grub(shapes: dict[str, Path]) -> None:
    realm = shapes["enclave"]
    etc = realm / "etc"
    # set/enclave/etc: links out of the realm, to the system realm's files
    for name in ("ssl", "passwd", "hosts", "zoneinfo"):
        assert os.readlink(etc / name) == f"/ix/realm/system/etc/{name}"
    assert (etc / "motd").read_text() == "hello\n"
    # bin/openresolv/runit/scripts: the link its hook made, beside the file it ships
    assert os.readlink(etc / "resolv.conf") == "/var/run/resolvconf/resolv.conf"
    assert (etc / "resolvconf.conf").is_symlink()
    # bin/runit/sys/etc: etc/runit/1 made of its parts, which are gone, and it runs
    one = etc / "runit" / "1"
    assert regular(one) and not (etc / "runit" / "1.d").exists()
    assert subprocess.run([str(one)], capture_output=True, text=True,
                          check=True).stdout == "one\ntwo\n"
    # bin/kernel/gengrub: a menu of the realm's kernels, newest first
    grub = (etc / "grub.cfg").read_text()
    assert grub.index('"bin/kernel-6.1"') < grub.index('"bin/kernel-5.10"')
    assert "linux /bin/kernel-6.1 ro quiet" in grub
    assert not (realm / "fix").exists()


def test_wrappers_run_what_they_moved(shapes: dict[str, Path]) -> None:
    realm = shapes["wraps"]
    env = {"PATH": f"{realm}/bin:/usr/bin:/bin"}
    # bin/clang/env/wrapper: bin/cc, pointed at the realm's own path, sources its env and
    # runs its clang
    cc = realm / "bin" / "cc"
    assert regular(cc) and str(realm) in cc.read_text()
    assert subprocess.run([str(cc), "-c", "x.c"], capture_output=True, text=True, env=env,
                          check=True).stdout == "clang -c x.c\n"
    # die/fix/wrapper.sh (bin/sudo/er): demo moved aside, a wrapper in its place runs it
    # through sudo
    moved = realm / "bin" / "bin_bin_t_sudo_er" / "demo"
    assert moved.is_symlink() and not regular(moved)
    wrapper = realm / "bin" / "demo"
    assert regular(wrapper)
    ran = subprocess.run([str(wrapper), "a", "b"], capture_output=True, text=True, env=env,
                         check=True).stdout.splitlines()
    assert ran[0] == f"sudo runs {moved}"
    assert ran[1] == f"hi a b from {moved}"
    # bin/xdg/er: the same, with the realm's share/ and bin/ put first
    xmoved = realm / "bin" / "bin_bin_t_xdg_er" / "xdemo"
    ran = subprocess.run([str(realm / "bin" / "xdemo"), "c"], capture_output=True, text=True,
                         env=env, check=True).stdout.splitlines()
    assert ran == [f"yo c from {xmoved}", f"XDG={realm}/share:"]
    assert not (realm / "fix").exists()


def test_the_realm_is_the_daemons_and_deterministic(daemon: RunningDaemon,
                                                    shapes: dict[str, Path]) -> None:
    realm = shapes["wraps"]
    meta = json.loads((realm / "meta.json").read_text())
    assert meta["uid"] == realm.name.split("-", 1)[0]
    assert f'export IX_REALM="{realm}"' in (realm / "env").read_text()
    # the hooks' output is canonical like any build's: read-only, the daemon's
    for path in (realm, realm / "bin", realm / "bin" / "demo"):
        st = os.lstat(path)
        assert st.st_uid == os.getuid() and not st.st_mode & 0o222
    # assembled again from nothing (collected, then asked for again): the same tree
    before = tree_hash(realm)
    daemon.ixc("purge", "wraps")
    daemon.ixc("gc")
    assert not realm.exists()
    daemon.ixc("mut", "wraps", *(f"+{p}" for p in REALMS["wraps"]))
    assert daemon.realm("wraps").resolve() == realm
    assert tree_hash(realm) == before


def test_a_hostile_hook_cannot_touch_what_the_daemon_writes(daemon: RunningDaemon) -> None:
    passwd = Path("/etc/passwd").read_bytes()
    daemon.ixc("mut", "hostile", "+bin/t/hostile")
    realm = daemon.realm("hostile").resolve()
    assert Path("/etc/passwd").read_bytes() == passwd
    assert regular(realm / "meta.json") and "store_dirs" in json.loads(
        (realm / "meta.json").read_text())
    assert regular(realm / "env")
    assert not os.lstat(realm / "setuid-file").st_mode & stat.S_ISUID
    # the hooks ran as a build user, not as the daemon
    assert (realm / "who").read_text().strip() not in ("", "0")
    # a host program the hooks copied in is refused, as any dynamic program
    failed = daemon.ixc("mut", "hostile2", "+bin/t/hostile(dynamic=1)", check=False)
    assert failed.returncode != 0 and "[E_DYNAMIC_BINARY]" in failed.stderr, failed.stderr
    assert "ls-copy" in failed.stderr


@pytest.fixture(scope="module")
def live() -> Iterator[dict[str, Path]]:
    """The realms of `LIVE_REALMS`, made by a daemon whose overlay holds stal/IX's own recipe
    folders of the nine (their files, includes and all, as its tree has them) and
    die/fix/wrapper.sh; its `//die/gen.sh` (stal/IX's recipe of generated files, on its own
    toolchain) is ix's plain shell recipe."""
    if not (STALIX_PKGS / "die" / "fix" / "wrapper.sh").is_file():
        pytest.skip(f"stal/IX's tree is not at {STALIX_PKGS} (set IX_STALIX_PKGS)")
    top = Path(tempfile.mkdtemp(prefix="ix-fixup-live-", dir="/var/tmp"))
    overlay = top / "overlay"
    stand_ins = {name: SHAPES[name] for name in (
        "etc/t/profile/a", "etc/t/profile/b", "etc/t/sudoer/record", "etc/t/motd",
        "bin/t/kernels", "bin/t/clang", "bin/t/fakesudo", "bin/t/demo")}
    write_overlay(overlay, {**stand_ins, "die/gen.sh": "{% extends '//die/sh.sh' %}\n"})
    for name in LIVE:
        folder = overlay / name
        folder.mkdir(parents=True)
        for file in (STALIX_PKGS / name).iterdir():
            if file.is_file():
                (folder / file.name).write_bytes(file.read_bytes())
    (overlay / "die" / "fix").mkdir(parents=True)
    (overlay / "die" / "fix" / "wrapper.sh").write_bytes(
        (STALIX_PKGS / "die" / "fix" / "wrapper.sh").read_bytes())
    running = start_daemon(top / "root", overlays=(overlay, Path("pkgs").resolve()))
    try:
        made = {}
        for realm, packages in LIVE_REALMS.items():
            running.ixc("mut", realm, *(f"+{p}" for p in packages))
            made[realm] = running.realm(realm).resolve()
        yield made
        assert running.stop() == 0, running.log.read_text()
    finally:
        running.stop()
        remove_tree(top)


def test_stalix_own_etc_hooks(live: dict[str, Path]) -> None:
    etc = live["etcs"] / "etc"
    # etc/concat: profile.d (the stand-ins' parts and bin/runit/sys/etc's) and sysctl.d are
    # one file each, after etc/runit/1 was made of 1.d (its hook's name comes first)
    assert regular(etc / "profile") and not (etc / "profile.d").exists()
    assert (etc / "profile").read_text() == (
        "export PATH=/ix/realm/${USER}/bin:/bin\nexport A=1\nexport B=2\n")
    assert "vm.swappiness = 10" in (etc / "sysctl").read_text()
    assert not (etc / "sysctl.d").exists()
    assert (etc / "shells").read_text() == "/bin/bash\n/bin/sh\n"
    one = etc / "runit" / "1"
    assert regular(one) and os.access(one, os.X_OK) and not (etc / "runit" / "1.d").exists()
    assert one.read_text().startswith("#!/bin/sh\nexport PATH=/bin\n# mount ro\n")
    assert (etc / "runit" / "2").read_text().startswith("#!/bin/sh\nunset TERM\n")
    # etc/sudoer/fix: etc/sud (made by etc/concat of sud.d) moved where sudo looks
    keys = etc / "sudo" / "authorized_keys"
    assert regular(keys) and keys.read_text() == "ssh-ed25519 KEY alice\n"
    assert not os.lstat(keys).st_mode & 0o222  # canonical: read-only
    assert not (live["etcs"] / "fix").exists()


def test_stalix_own_enclave_openresolv_and_grub_hooks(live: dict[str, Path]) -> None:
    etc = live["enclave"] / "etc"
    for name in ("ssl", "passwd", "group", "hostname", "machine-id", "hosts", "profile",
                 "zoneinfo"):
        assert os.readlink(etc / name) == f"/ix/realm/system/etc/{name}"
    assert os.readlink(etc / "resolv.conf") == "/var/run/resolvconf/resolv.conf"
    grub = (etc / "grub.cfg").read_text()
    assert grub.startswith("insmod all_video\ntimeout=5\nprobe --part-uuid $root")
    assert grub.index('"bin/kernel-6.1"') < grub.index('"bin/kernel-5.10"')
    assert "linux /bin/kernel-6.1 ro root=PARTUUID=$rootuuid quiet" in grub


def test_stalix_own_wrappers_run_what_they_moved(live: dict[str, Path]) -> None:
    realm = live["wraps"]
    env = {"PATH": f"{realm}/bin:/usr/bin:/bin"}
    # bin/clang/env/wrapper: cc, c++ and cpp in bin/, pointed at the realm; cc runs its clang
    for name in ("cc", "c++", "cpp"):
        assert regular(realm / "bin" / name)
        assert "__realm__" not in (realm / "bin" / name).read_text()
    assert subprocess.run([str(realm / "bin" / "cc"), "-c", "x.c"], capture_output=True,
                          text=True, env=env, check=True).stdout == "clang -c x.c\n"
    # die/fix/wrapper.sh: bin/sudo/er's and bin/xdg/er's wrappers run the moved programs
    moved = realm / "bin" / "bin_bin_sudo_er" / "demo"
    assert moved.is_symlink()
    ran = subprocess.run([str(realm / "bin" / "demo"), "a"], capture_output=True, text=True,
                         env=env, check=True).stdout.splitlines()
    assert ran == [f"sudo runs {moved}", f"hi a from {moved}", "XDG="]
    xmoved = realm / "bin" / "bin_bin_xdg_er" / "xdemo"
    ran = subprocess.run([str(realm / "bin" / "xdemo"), "c"], capture_output=True, text=True,
                         env=env, check=True).stdout.splitlines()
    assert ran == [f"yo c from {xmoved}", f"XDG={realm}/share:"]
