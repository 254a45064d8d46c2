{#- The clang toolchain's programs, shared by the host's (bld/host/clang) and the bootstrapped
    one (bld/boot/1/clang): in $out/bin, LLVM's tools under binutils' names (ld, ar, nm, ...)
    and the wrappers cc, clang, c++ and clang++, each the driver of $llvm for the package's
    target, against the C library and runtimes among the build's target libraries, with
    clang's own headers from $clang_include. `bin` is where ln, sed and chmod are (`/bin/`
    for a host tool, whose PATH is empty; '' on a build's PATH). -#}
{{ bin }}ln -s "$llvm/ld.lld" "$out/bin/ld.lld"
{{ bin }}ln -s "$llvm/ld.lld" "$out/bin/ld"
for tool in ar ranlib nm strip objcopy objdump readelf size strings; do
    {{ bin }}ln -s "$llvm/llvm-$tool" "$out/bin/$tool"
done
for name in cc clang c++ clang++; do
    case "$name" in *++) driver=clang++ ;; *) driver=clang ;; esac
    {{ bin }}sed -e "s|@NAME@|$name|g" -e "s|@DRIVER@|$driver|g" -e "s|@LLVM@|$llvm|g" \
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
    {{ bin }}chmod +x "$out/bin/$name"
done
