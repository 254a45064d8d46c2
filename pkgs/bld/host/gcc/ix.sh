{#- The host gcc as the C toolchain (`--cc=gcc` on a package or a realm): compiling against
    this system's C library (lib/c, musl built from source) and linking statically, with
    gcc's own runtime library (libgcc, from the host's gcc installation) and the host's GNU
    binutils. C only: C++ packages need clang (die/c/ix.sh refuses them).

    `cc` and `gcc` read the C library's folder from $IX_LIBC, which lib/c's env sets: the
    toolchain induces lib/c into the target libraries of everything it builds (ind_deps), so
    every C package links it without naming it. With the flag `libc=none` it is the bare
    host gcc instead (what lib/c itself is built with). -#}
{% extends '../compiler.sh' %}
{% block host_tools %}
gcc
{% endblock %}
{% block run_deps %}
bld/host/binutils
{% endblock %}
{% block runtime_libs %}
lib/c(cc=gcc)
{% endblock %}
{% block tool_wrappers %}
{% if libc == 'none' %}
/bin/ln -s gcc "$out/bin/cc"
{% else %}
/bin/mkdir -p "$out/libexec"
/bin/mv "$out/bin/gcc" "$out/libexec/gcc"
for name in cc gcc; do
    /bin/sed -e "s|@NAME@|$name|g" -e "s|@OUT@|$out|g" > "$out/bin/$name" <<'IX_WRAPPER'
#!/bin/sh
# @NAME@: the host gcc against the C library in $IX_LIBC (musl's layout), always static
if [ -z "${IX_LIBC:-}" ] || [ ! -f "$IX_LIBC/lib/ix-gcc.specs" ]; then
    echo "@NAME@: no C library: IX_LIBC (${IX_LIBC:-unset}) does not name a lib/c with" \
         "lib/ix-gcc.specs; lib/c must be among the build's target libraries" >&2
    exit 1
fi
exec "@OUT@/libexec/gcc" -specs "$IX_LIBC/lib/ix-gcc.specs" -static "$@"
IX_WRAPPER
    /bin/chmod +x "$out/bin/$name"
done
{% endif %}
{% endblock %}
