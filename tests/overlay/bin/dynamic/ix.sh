{#- A dynamically linked program (a copy of the host's `true`): the static policy refuses it
    in a realm unless the package is flagged allow_dynamic. -#}
{% extends '//die/sh.sh' %}
{# it copies or runs the host's own programs: it reads the host #}
{% block host_view %}build{% endblock %}
{% block install %}
mkdir -p "$out/bin"
cp /bin/true "$out/bin/dyntrue"
{% endblock %}
