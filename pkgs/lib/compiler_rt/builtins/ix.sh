{#- compiler-rt's builtins: clang's runtime library (integer and floating-point helpers the
    compiler calls, in place of gcc's libgcc), and its crtbegin.o/crtend.o (in place of
    gcc's). Installed as clang's resource folder lays them out (lib/linux/...), which the
    clang toolchain points clang at (-resource-dir) through IX_BUILTINS, set by this env.

    The clang toolchain induces it into every package it builds; it is itself built with the
    bare toolchain (`libc=none`) against lib/c's headers. -#}
{% extends '//lib/llvm/src.sh' %}
{% block c_compiler %}
{{ super() | strip }}(libc=none)
{% endblock %}
{% block bld_libs %}
lib/c
{% endblock %}
{% block patch %}
# clear_cache.c includes the kernel's linux/unistd.h for riscv's icache flush, the only kernel
# header the builtins need (musl carries none): musl's own syscall numbers stand in for it
mkdir -p "$tmp/kernel/linux"
echo '#include <sys/syscall.h>' > "$tmp/kernel/linux/unistd.h"
export CFLAGS="-isystem $tmp/kernel ${CFLAGS}"
{% endblock %}
{% block llvm_subdirs %}
{{ super() }}
compiler-rt
{% endblock %}
{% block cmake_srcdir %}
compiler-rt
{% endblock %}
{% block cmake_flags %}
{{ super() }}
CMAKE_C_COMPILER_TARGET={{ target.gnu_arch }}-unknown-linux-musl
CMAKE_ASM_COMPILER_TARGET={{ target.gnu_arch }}-unknown-linux-musl
COMPILER_RT_DEFAULT_TARGET_ONLY=ON
COMPILER_RT_INSTALL_PATH="$out"
LLVM_CONFIG_PATH=
COMPILER_RT_BUILD_BUILTINS=ON
COMPILER_RT_BUILD_CRT=ON
COMPILER_RT_BUILD_SANITIZERS=OFF
COMPILER_RT_BUILD_XRAY=OFF
COMPILER_RT_BUILD_LIBFUZZER=OFF
COMPILER_RT_BUILD_PROFILE=OFF
COMPILER_RT_BUILD_MEMPROF=OFF
COMPILER_RT_BUILD_ORC=OFF
COMPILER_RT_BUILD_GWP_ASAN=OFF
COMPILER_RT_INCLUDE_TESTS=OFF
{% endblock %}
{% block env %}
export IX_BUILTINS="$out"
{% endblock %}
