{#- What every host C compiler wrapper shares: the C library (lib/c, musl from source) and the
    compiler's runtime library, both built by this compiler (`runtime_libs`), induced into
    the target libraries of everything it builds, unless the flag `libc=none` asks for the
    bare compiler (what lib/c itself, and the runtime library, are built with).

    The libraries a tool induces reach the host libraries too, loaded with no flag but the
    target (docs/recipes.md, "Closures"): so a compiler other than the default names itself
    in them (`lib/c(cc=gcc)`), else the host's side would build a C library with the
    default compiler beside its own. -#}
{% extends 'tool.sh' %}
{% block ind_deps %}
{% if libc != 'none' %}
{{ self.runtime_libs() }}
{% endif %}
{% endblock %}
{% block runtime_libs %}
lib/c
{% endblock %}
