{#- A build that fails on purpose, after printing a few log lines. -#}
{% extends '//die/sh.sh' %}
{% block build %}
echo "compiling the thing"
echo "error: the thing is broken on purpose" >&2
exit 3
{% endblock %}
