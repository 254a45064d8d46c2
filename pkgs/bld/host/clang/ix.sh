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
{% set bin = '/bin/' %}
{% include '//bld/clang/wrappers.sh' %}
{% endblock %}
{% block host_llvm %}
# Where the compiler comes from (the one place that says so): the host's clang found above
# (linked as $out/bin/clang), and the LLVM tools and clang's own headers installed with it.
host_clang=$(/bin/readlink -f "$out/bin/clang")
llvm=${host_clang%/*}
clang_include=$("$host_clang" -print-resource-dir)/include
{% endblock %}
