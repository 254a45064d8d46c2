{#- What every host C compiler wrapper shares: binutils beside it, and lib/c (musl from
    source) induced into the target libraries of everything it builds, unless the flag
    `libc=none` asks for the bare compiler (what lib/c itself is built with). -#}
{% extends 'tool.sh' %}
{% block run_deps %}
bld/host/binutils
{% endblock %}
{% block ind_deps %}
{% if libc != 'none' %}
lib/c
{% endif %}
{% endblock %}
