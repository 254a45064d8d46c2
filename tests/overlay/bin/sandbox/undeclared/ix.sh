{#- Calls a tool it does not declare (perl): on ixd's default chain it is not found. -#}
{% extends '//die/sh.sh' %}
{% block install %}
perl -e 'print "the host perl ran\n"'
mkdir -p "$out"
{% endblock %}
