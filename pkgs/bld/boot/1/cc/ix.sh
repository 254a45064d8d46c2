{#- Stage 1's C toolchain: stage 0's clang and LLVM tools, compiling for the target's
    musl triple against the C library in $IX_LIBC, linking statically with lld. It induces
    that C library into the target libraries of what it builds: lib/c, or with the flag
    `libc=boot` stage 1's own (bld/boot/1/lib/c); with `libc=none` it is the bare compiler
    (what a C library is built with).

    There is no compiler runtime yet (compiler-rt comes later): clang asks the linker for
    gcc's start files and libgcc by name, and the linker `ld` here (the first one clang
    finds, by `-B`) drops them, as musl's own ld.musl-clang does; C programs on musl need
    neither. The binutils a build calls by name (ar, nm, strip, ...) are stage 0's LLVM
    tools. -#}
{% extends '//die/sh.sh' %}
{% block std_tools %}
bld/boot/0/seed
bld/boot/0/clang
{% endblock %}
{% block run_deps %}
bld/boot/0/clang
{% endblock %}
{% block ind_deps %}
{% if libc == 'boot' %}
bld/boot/1/lib/c
{% elif libc != 'none' %}
lib/c
{% endif %}
{% endblock %}
{% block install %}
llvm=$(dirname "$(command -v clang)")
mkdir -p "$out/bin" "$out/libexec/ix-cc"
cat > "$out/libexec/ix-cc/ld" <<IX_LD
#!/bin/sh
# lld, without the gcc start files and libgcc clang names (there are none here)
for arg; do
    [ -n "\${ix_cleared:-}" ] || { set --; ix_cleared=1; }
    case "\$arg" in
        crtbegin*.o|crtend*.o|-lgcc|-lgcc_eh|-lgcc_s) ;;
        *) set -- "\$@" "\$arg" ;;
    esac
done
exec "$llvm/ld.lld" "\$@"
IX_LD
{% if libc == 'none' %}
sysroot=
{% else %}
sysroot='--sysroot="$IX_LIBC"'
{% endif %}
for name in cc clang gcc c99; do
    cat > "$out/bin/$name" <<IX_CC
#!/bin/sh
{% if libc != 'none' %}
if [ ! -f "\${IX_LIBC:-/nonexistent}/lib/libc.a" ]; then
    echo "$name: no C library: IX_LIBC (\${IX_LIBC:-unset}) does not name one" >&2
    exit 1
fi
{% endif %}
exec "$llvm/clang" --target={{ target.gnu_arch }}-unknown-linux-musl $sysroot -static \
    -B "$out/libexec/ix-cc" "\$@"
IX_CC
done
cat > "$out/bin/cpp" <<IX_CPP
#!/bin/sh
exec "$out/bin/cc" -E "\$@"
IX_CPP
chmod +x "$out/bin/"* "$out/libexec/ix-cc/ld"
for tool in ar ranlib nm strip objcopy objdump readelf size strings; do
    ln -s "$llvm/llvm-$tool" "$out/bin/$tool"
done
ln -s "$llvm/ld.lld" "$out/bin/ld"
{% endblock %}
{% block env %}
{{ super() }}
export CC=cc
export AR=ar
export RANLIB=ranlib
{% endblock %}
