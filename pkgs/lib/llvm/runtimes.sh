{#- An LLVM runtime (lib/unwind, lib/c++abi, lib/c++) built through LLVM's `runtimes` folder,
    static, for the target's musl, linking compiler-rt's builtins. libc++abi is built against
    libc++'s headers, so the two share the libc++ settings below (the ABI libc++'s headers
    describe must be the one both are built for). -#}
{% extends 'src.sh' %}
{% block cmake_srcdir %}
runtimes
{% endblock %}
{% block llvm_subdirs %}
{{ super() }}
runtimes
# each runtime's CMake script insists on the monorepo's layout, with the others beside it
libunwind
libcxx
libcxxabi
{% endblock %}
{% block cmake_flags %}
{{ super() }}
LLVM_DEFAULT_TARGET_TRIPLE={{ target.gnu_arch }}-unknown-linux-musl
LLVM_ENABLE_RUNTIMES="{{ self.llvm_runtimes() | parse_list | join(';') }}"
LIBUNWIND_ENABLE_SHARED=OFF
LIBUNWIND_ENABLE_STATIC=ON
LIBUNWIND_USE_COMPILER_RT=ON
LIBUNWIND_INCLUDE_TESTS=OFF
LIBCXXABI_ENABLE_SHARED=OFF
LIBCXXABI_ENABLE_STATIC=ON
LIBCXXABI_USE_COMPILER_RT=ON
LIBCXXABI_INCLUDE_TESTS=OFF
LIBCXX_ENABLE_SHARED=OFF
LIBCXX_ENABLE_STATIC=ON
LIBCXX_ENABLE_EXPERIMENTAL_LIBRARY=OFF
LIBCXX_USE_COMPILER_RT=ON
LIBCXX_HAS_MUSL_LIBC=ON
LIBCXX_CXX_ABI=libcxxabi
LIBCXX_INCLUDE_BENCHMARKS=OFF
LIBCXX_INCLUDE_TESTS=OFF
{% endblock %}
{% if false %}
{% block llvm_runtimes %}{% endblock %}
{% endif %}
