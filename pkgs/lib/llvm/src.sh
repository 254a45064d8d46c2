{#- LLVM 14.0.6's source, the release of the host's clang, for the parts ix builds from it:
    compiler-rt's builtins and the C++ runtimes (libunwind, libc++abi, libc++). Built with
    clang alone, by CMake and Ninja; LLVM's CMake scripts ask for Python.

    The source is Debian's orig tarball of llvm-toolchain-14, fetched by its Debian source
    package (a `deb-src://` URL: docs/recipes.md, "Sources"): Debian makes it from LLVM's git
    tag llvmorg-14.0.6, so it is not byte for byte the release tarball upstream publishes
    (https://github.com/llvm/llvm-project/archive/refs/tags/llvmorg-14.0.6.tar.gz, sha256
    98f15f842700bdb7220a166c8d2739a03a72e775b67031205078f39dd756a055, what stal/IX fetches).

    A build unpacks only the folders of the tree it reads (`llvm_subdirs`), without their
    tests and documentation: the whole tree is 1.3 GB. -#}
{% extends '//die/c/cmake.sh' %}
{% block pkg_name %}llvm{% endblock %}
{% block version %}14.0.6{% endblock %}
{% block fetch %}
deb-src://llvm-toolchain-14/1:14.0.6-12/llvm-toolchain-14_14.0.6.orig.tar.xz
sha:d9bce5f42381d781e273c724db1ab0acd66259bf2782b79891664dbf1953d22c
{% endblock %}
{% block bld_tool %}
{{ super() }}
bld/host/python
{% endblock %}
{% block compilers %}
clang
{% endblock %}
{% block unpack %}
tar --no-same-owner -xf "$src/llvm-toolchain-14_14.0.6.orig.tar.xz" \
    --exclude='llvm-toolchain-14_14.0.6/*/test' \
    --exclude='llvm-toolchain-14_14.0.6/*/docs' \
    --exclude='llvm-toolchain-14_14.0.6/*/benchmarks' \
    {% for folder in self.llvm_subdirs() | parse_list %}
    'llvm-toolchain-14_14.0.6/{{ folder }}' \
    {% endfor %}

cd llvm-toolchain-14_14.0.6
{% endblock %}
{% block cmake_flags %}
{{ super() }}
LLVM_INCLUDE_TESTS=OFF
LLVM_INCLUDE_DOCS=OFF
LLVM_ENABLE_PER_TARGET_RUNTIME_DIR=OFF
{% endblock %}
{% block env %}{% endblock %}
{% if false %}
{% block llvm_subdirs %}
cmake
llvm/cmake
{% endblock %}
{% endif %}
