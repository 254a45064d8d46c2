{#- LLVM's libc++, the C++ standard library of every C++ package (a C++ package lists lib/c++
    in its bld_libs, as in stal/IX): with it come lib/c++abi and lib/unwind. The clang
    toolchain compiles C++ against its headers and links it (-stdlib=libc++) through
    IX_LIBCXX, set by this env. Static only. -#}
{% extends '//lib/llvm/runtimes.sh' %}
{% block bld_libs %}
lib/c++abi
{% endblock %}
{% block lib_deps %}
lib/c++abi
{% endblock %}
{% block llvm_runtimes %}
libcxx
{% endblock %}
{% block patch %}
# libc++'s atomic waits name two constants of the kernel's linux/futex.h, the only kernel
# header it needs (musl carries none): defined here, as the kernel's ABI fixes them
mkdir -p "$tmp/kernel/linux"
cat > "$tmp/kernel/linux/futex.h" <<'IX_FUTEX'
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#define FUTEX_PRIVATE_FLAG 128
#define FUTEX_WAIT_PRIVATE (FUTEX_WAIT | FUTEX_PRIVATE_FLAG)
#define FUTEX_WAKE_PRIVATE (FUTEX_WAKE | FUTEX_PRIVATE_FLAG)
IX_FUTEX
export CXXFLAGS="-isystem $tmp/kernel ${CXXFLAGS}"
{% endblock %}
{% block cmake_flags %}
{{ super() }}
LIBCXX_CXX_ABI_INCLUDE_PATHS="$IX_CXXABI/include"
{% endblock %}
{% block ninja_build_targets %}
cxx
{% endblock %}
{% block ninja_install_targets %}
install-cxx
install-cxx-headers
{% endblock %}
{% block env %}
export IX_LIBCXX="$out"
{% endblock %}
