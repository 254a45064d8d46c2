{#- LLVM's libunwind: the unwinder C++ exceptions run on (in place of gcc's libgcc_eh). The
    clang toolchain links it into C++ programs (--unwindlib=libunwind) through IX_UNWIND,
    set by this env. -#}
{% extends '//lib/llvm/runtimes.sh' %}
{% block llvm_runtimes %}
libunwind
{% endblock %}
{% block ninja_build_targets %}
unwind
{% endblock %}
{% block ninja_install_targets %}
install-unwind
{% endblock %}
{% block env %}
export IX_UNWIND="$out"
{% endblock %}
