{#- The host clang as the C toolchain (`--cc=clang` on a package or a realm): `cc` and
    `clang` compile for the target's musl triple with the C library in $IX_LIBC as the
    sysroot, and link statically (crt files and libgcc come from the host's gcc installation,
    as clang finds it). It induces lib/c like bld/host/cc; with `libc=none` it is bare clang.
    Fails with a clear message where clang is not installed. -#}
{% extends '../compiler.sh' %}
{% block host_tools %}
clang
{% endblock %}
{% block script %}
for dir in /usr/local/bin /usr/bin /bin; do
    if [ -x "$dir/clang" ]; then found=1; fi
done
if [ -z "${found:-}" ]; then
    echo "--cc=clang: clang is not installed on this host (no clang in /usr/local/bin," \
         "/usr/bin or /bin); install it (apt-get install clang) or build with the default" \
         "gcc toolchain" >&2
    exit 1
fi
{{ super() }}
{% endblock %}
{% block tool_wrappers %}
{% if libc == 'none' %}
/bin/ln -s clang "$out/bin/cc"
{% else %}
# clang finds the gcc installation (crt files, libgcc) beside the folder it was started
# from: start it from the host's folder, not through a link in the store
host_clang=$(/bin/readlink "$out/bin/clang")
/bin/rm "$out/bin/clang"
for name in cc clang; do
    /bin/sed -e "s|@NAME@|$name|g" -e "s|@CLANG@|$host_clang|g" > "$out/bin/$name" <<'IX_WRAPPER'
#!/bin/sh
# @NAME@: the host clang against the C library in $IX_LIBC (its sysroot), always static
if [ -z "${IX_LIBC:-}" ] || [ ! -f "$IX_LIBC/lib/libc.a" ]; then
    echo "@NAME@: no C library: IX_LIBC (${IX_LIBC:-unset}) does not name a lib/c;" \
         "lib/c must be among the build's target libraries" >&2
    exit 1
fi
exec "@CLANG@" --target={{ target.gnu_arch }}-unknown-linux-musl --sysroot="$IX_LIBC" -static "$@"
IX_WRAPPER
    /bin/chmod +x "$out/bin/$name"
done
{% endif %}
{% endblock %}
