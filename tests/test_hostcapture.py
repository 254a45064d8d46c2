"""Stage 0's captures of host programs (ixd/recipes/hostcapture.py): the files a capture
copies are exactly what the loader would load, their sha256 are kept while the files stay
the same, and nothing unsafe reaches the capture's script."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ixd.recipes.hostcapture import CaptureError, HostCapture, read_elf

SEARCH = ["/usr/local/bin", "/usr/bin", "/bin"]


def _copied(lines: tuple[str, ...]) -> set[str]:
    """The real files a manifest copies (its F and X lines)."""
    return {line.split()[-1] for line in lines if line[0] in "FX"}


def _ldd(program: str) -> set[str]:
    """What the system's own loader loads for `program` (`ldd`), as real paths."""
    listed = subprocess.run(["ldd", program], capture_output=True, text=True, check=True)
    found = set()
    for line in listed.stdout.splitlines():
        words = line.split()
        path = words[2] if "=>" in words and len(words) > 2 else words[0]
        if path.startswith("/"):
            found.add(os.path.realpath(path))
    return found


@pytest.mark.parametrize("program", ["sed", "tar", "clang"])
def test_a_capture_copies_what_the_loader_loads(tmp_path: Path, program: str) -> None:
    """The libraries come from the programs' ELF dependencies, found as the loader finds
    them: the same files as ldd's, no more, no fewer (clang's closure is 20 libraries)."""
    path = shutil.which(program, path=":".join(SEARCH))
    if path is None:
        pytest.skip(f"{program} is not installed here")
    captured = HostCapture(tmp_path / "sums.json").capture([program], search=SEARCH)
    real = os.path.realpath(path)
    assert _copied(captured.lines) == {real, *_ldd(path)}
    assert f"X {_sha256(real)} {real}" in captured.lines  # started through the launcher
    loader = read_elf(real)
    assert loader is not None and loader.interpreter is not None
    assert captured.loader == os.path.realpath(loader.interpreter)
    # bin/NAME is the program as found (its folder's links resolved)
    assert captured.lines[-1].startswith(f"B {program} /")


def test_links_on_the_way_are_kept_and_made_relative(tmp_path: Path) -> None:
    """An absolute link (Debian's /etc/alternatives) points into the capture, not out."""
    tools = tmp_path / "tools"
    (tmp_path / "alternatives").mkdir()
    tools.mkdir()
    real = tools / "real-tool"
    real.write_text("#!/bin/sh\necho real\n")
    real.chmod(0o755)
    (tmp_path / "alternatives" / "tool").symlink_to(real)  # absolute
    (tools / "tool").symlink_to(tmp_path / "alternatives" / "tool")  # absolute
    captured = HostCapture().capture(["tool"], search=[str(tools)])
    lines = set(captured.lines)
    assert f"L ../alternatives/tool {tools}/tool" in lines
    assert f"L ../tools/real-tool {tmp_path}/alternatives/tool" in lines
    assert any(line.startswith("F 755 ") and line.endswith(str(real)) for line in lines)
    assert f"B tool {tools}/tool" in lines
    assert captured.loader is None  # a script: no loader, no launcher


def test_a_folder_is_captured_whole(tmp_path: Path) -> None:
    top = tmp_path / "resource"
    (top / "include" / "sub").mkdir(parents=True)
    (top / "include" / "a.h").write_text("int a;\n")
    (top / "include" / "sub" / "b.h").write_text("int b;\n")
    (top / "include" / "c.h").symlink_to("a.h")
    captured = HostCapture().capture([], [str(top)])
    assert [line.split()[0] + " " + line.split()[-1] for line in captured.lines] == [
        f"F {top}/include/a.h", f"L {top}/include/c.h", f"F {top}/include/sub/b.h"]


def test_the_sha256_are_kept_while_the_files_stay_the_same(tmp_path: Path) -> None:
    """A plan does not hash ~250 MB of compiler again: a second capture (a restarted
    daemon) hashes nothing; a changed file is hashed again, and changes the digest."""
    top = tmp_path / "resource"
    top.mkdir()
    for i in range(5):
        (top / f"f{i}").write_text(f"file {i}\n")
    cache = tmp_path / "var" / "host-capture.json"
    cache.parent.mkdir()
    first = HostCapture(cache)
    digest = first.capture([], [str(top)]).digest
    assert first.hashed == 5 and cache.is_file()
    again = HostCapture(cache)
    assert again.capture([], [str(top)]).digest == digest
    assert again.hashed == 0
    (top / "f3").write_text("file 3, changed\n")
    changed = HostCapture(cache)
    assert changed.capture([], [str(top)]).digest != digest
    assert changed.hashed == 1


def test_a_missing_program_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"no-such-compiler.*no such program on /nowhere"):
        HostCapture().capture(["no-such-compiler"], search=["/nowhere"])


def test_a_path_unsafe_in_a_script_is_refused(tmp_path: Path) -> None:
    top = tmp_path / "resource"
    top.mkdir()
    (top / "a file; rm -rf $HOME").write_text("x")
    with pytest.raises(CaptureError, match="may hold only letters"):
        HostCapture().capture([], [str(top)])


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed here")
def test_a_library_beside_the_program_is_found_by_its_origin_runpath(tmp_path: Path) -> None:
    """DT_RUNPATH with $ORIGIN, as the loader reads it (ldd agrees)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (tmp_path / "f.c").write_text("int f(void) { return 42; }\n")
    (tmp_path / "main.c").write_text("int f(void);\nint main(void) { return f() - 42; }\n")
    subprocess.run(["clang", "-shared", "-fPIC", "-o", lib / "libf.so", tmp_path / "f.c"],
                   check=True)
    program = tmp_path / "bin" / "prog"
    program.parent.mkdir()
    subprocess.run(["clang", "-o", program, tmp_path / "main.c", f"-L{lib}", "-lf",
                    "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib"], check=True)
    assert subprocess.run([program]).returncode == 0
    captured = HostCapture().capture([str(program)], search=[])
    assert str(lib / "libf.so") in _copied(captured.lines)
    assert _copied(captured.lines) == {str(program), *_ldd(str(program))}
    assert str(lib) in captured.library_dirs


def _sha256(path: str) -> str:
    import hashlib
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
