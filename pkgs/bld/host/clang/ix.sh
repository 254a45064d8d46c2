{#- The default C and C++ toolchain: the host's clang and lld, and the LLVM tools beside them
    (`ar`, `nm`, `ranlib`, `strip`, ... are llvm-ar, llvm-nm, ...; `ld` is ld.lld).

    `cc`/`clang` and `c++`/`clang++` compile for the target's musl triple and link
    statically with lld, against the C library and runtimes among the build's target
    libraries (see the wrapper's comment): it induces lib/c and lib/compiler_rt/builtins
    (clang's runtime library, in place of libgcc), and a C++ package brings lib/c++ (with
    lib/c++abi and lib/unwind). No part of the host's gcc installation is used. With the flag
    `libc=none` it induces nothing: the compiler lib/c and the runtimes are built with.

    Where the compiler comes from is said in one place, the block `host_llvm`. -#}
{% extends '../compiler.sh' %}
{% block host_tools %}
clang
{% endblock %}
{% block runtime_libs %}
lib/c
lib/compiler_rt/builtins
{% endblock %}
{% block script %}
for dir in /usr/local/bin /usr/bin /bin; do
    if [ -x "$dir/clang" ]; then found=1; fi
done
if [ -z "${found:-}" ]; then
    echo "clang, the default compiler, is not installed on this host (no clang in" \
         "/usr/local/bin, /usr/bin or /bin): install it (apt-get install clang lld llvm)" \
         "or build C packages with --cc=gcc" >&2
    exit 1
fi
{{ super() }}
{% endblock %}
{% block tool_wrappers %}
{{ self.host_llvm() }}
for tool in "$llvm/ld.lld" "$llvm/llvm-ar" "$clang_include/stddef.h"; do
    if [ ! -e "$tool" ]; then
        echo "$tool is missing beside the host's clang ($host_clang): install lld and" \
             "llvm of clang's version (apt-get install lld-N llvm-N)" >&2
        exit 1
    fi
done
/bin/rm "$out/bin/clang"
/bin/ln -s "$llvm/ld.lld" "$out/bin/ld.lld"
/bin/ln -s "$llvm/ld.lld" "$out/bin/ld"
for tool in ar ranlib nm strip objcopy objdump readelf size strings; do
    /bin/ln -s "$llvm/llvm-$tool" "$out/bin/$tool"
done
for name in cc clang c++ clang++; do
    case "$name" in *++) driver=clang++ ;; *) driver=clang ;; esac
    /bin/sed -e "s|@NAME@|$name|g" -e "s|@DRIVER@|$driver|g" -e "s|@LLVM@|$llvm|g" \
             -e "s|@INCLUDE@|$clang_include|g" \
             -e "s|@TRIPLE@|{{ target.gnu_arch }}-unknown-linux-musl|g" \
             > "$out/bin/$name" <<'IX_WRAPPER'
#!/bin/sh
# @NAME@: @DRIVER@ of @LLVM@ for $IX_TARGET (the package's platform, set by its build; else
# @TRIPLE@), linked statically by lld, against the C library and runtimes among the build's
# target libraries, each found by the variable its env sets:
# IX_LIBC (lib/c: headers, start files, libc.a), IX_BUILTINS (lib/compiler_rt/builtins:
# the runtime library, crtbegin and crtend, laid out as clang's resource folder), and for C++
# IX_LIBCXX, IX_CXXABI, IX_UNWIND (lib/c++, lib/c++abi, lib/unwind). What is missing is left
# out: without a C library, the compiler is freestanding (what lib/c is built with); without
# the runtime library, nothing is linked but what the build names (what the builtins are built
# with); without lib/c++, C++ has no standard library (what the C++ runtimes are built with).
# Link flags go in always: a compile ignores them (-Wno-unused-command-line-argument).
set -- -static -fuse-ld=lld --ld-path=@LLVM@/ld.lld -idirafter @INCLUDE@ \
    -Wno-unused-command-line-argument "$@"
if [ -n "${IX_LIBC:-}" ]; then
    # --gcc-toolchain: not the host's gcc installation (its crtbegin, libgcc, headers)
    set -- --sysroot="$IX_LIBC" --gcc-toolchain="$IX_LIBC" "$@"
else
    set -- --sysroot=/nonexistent -nostdinc -nostdlib "$@"
fi
if [ -n "${IX_BUILTINS:-}" ]; then
    set -- -rtlib=compiler-rt -resource-dir="$IX_BUILTINS" "$@"
else
    set -- -nostdlib "$@"
fi
case @DRIVER@ in
clang++)
    if [ -n "${IX_LIBCXX:-}" ]; then
        set -- -nostdinc++ -isystem "$IX_LIBCXX/include/c++/v1" -stdlib=libc++ \
            -L"$IX_LIBCXX/lib" "$@"
    else
        set -- -nostdinc++ -nostdlib++ "$@"
    fi
    if [ -n "${IX_CXXABI:-}" ]; then
        set -- "$@" -L"$IX_CXXABI/lib" -lc++abi
    fi
    if [ -n "${IX_UNWIND:-}" ]; then
        set -- --unwindlib=libunwind -L"$IX_UNWIND/lib" "$@"
    else
        set -- --unwindlib=none "$@"
    fi
    ;;
*)
    set -- --unwindlib=none "$@"
    ;;
esac
exec @LLVM@/@DRIVER@ "$@" --target="${IX_TARGET:-@TRIPLE@}"
IX_WRAPPER
    /bin/chmod +x "$out/bin/$name"
done
{% endblock %}
{% block host_llvm %}
# Where the compiler comes from (the one place that says so): the host's clang found above
# (linked as $out/bin/clang), and the LLVM tools and clang's own headers installed with it.
host_clang=$(/bin/readlink -f "$out/bin/clang")
llvm=${host_clang%/*}
clang_include=$("$host_clang" -print-resource-dir)/include
{% endblock %}
