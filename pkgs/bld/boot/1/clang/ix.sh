{#- The default C and C++ toolchain of ixd's default chain (`ix_tools=boot`): stage 0's
    clang, lld and LLVM tools (bld/boot/0/clang: the host's, captured), wrapped by stage 1's
    tools exactly as bld/host/clang wraps the host's (bld/clang/wrappers.sh): the same
    driver flags, the same C library and runtimes found through IX_LIBC, IX_BUILTINS,
    IX_LIBCXX, IX_CXXABI and IX_UNWIND. It induces lib/c and lib/compiler_rt/builtins into
    what it builds; with the flag `libc=none` nothing (what they are built with). -#}
{% extends '//die/sh.sh' %}
{% block std_tools %}
{{ super() }}
bld/boot/0/clang
{% endblock %}
{% block run_deps %}
bld/boot/0/clang
{% endblock %}
{% block ind_deps %}
{% if libc != 'none' %}
lib/c
lib/compiler_rt/builtins
{% endif %}
{% endblock %}
{% block install %}
mkdir -p "$out/bin"
# stage 0's clang (its launcher: it runs the captured program with the captured libraries)
host_clang=$(readlink -f "$(command -v clang)")
llvm=${host_clang%/*}
clang_include=$("$host_clang" -print-resource-dir)/include
for tool in "$llvm/ld.lld" "$llvm/llvm-ar" "$clang_include/stddef.h"; do
    if [ ! -e "$tool" ]; then
        echo "$tool is missing from stage 0's capture of clang ($host_clang)" >&2
        exit 1
    fi
done
{% set bin = '' %}
{% include '//bld/clang/wrappers.sh' %}
{% endblock %}
