{#- A dynamically linked program (a copy of the host's `true`): the static policy refuses it
    in a realm unless the package is flagged allow_dynamic. -#}
{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p "$out/bin"
cp /bin/true "$out/bin/dyntrue"
{% endblock %}
