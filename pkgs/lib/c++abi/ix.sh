{#- LLVM's libc++abi: the C++ ABI library under libc++ (exceptions, RTTI, operator new,
    guards). Built against libc++'s headers (configured here with libc++'s settings, never
    built) and the compiler's unwind.h; libunwind comes with it into every C++ link. The
    clang toolchain links it into C++ programs through IX_CXXABI, set by this env; libc++
    builds against the headers it installs. -#}
{% extends '//lib/llvm/runtimes.sh' %}
{% block lib_deps %}
lib/unwind
{% endblock %}
{% block llvm_runtimes %}
libcxx
libcxxabi
{% endblock %}
{% block cmake_flags %}
{{ super() }}
LIBCXXABI_USE_LLVM_UNWINDER=OFF
{% endblock %}
{% block ninja_build_targets %}
cxxabi
{% endblock %}
{% block ninja_install_targets %}
install-cxxabi
{% endblock %}
{% block postinstall %}
mkdir -p "$out/include"
cp libcxxabi/include/*.h "$out/include/"
{% endblock %}
{% block env %}
export IX_CXXABI="$out"
{% endblock %}
