{#- Attack: a build that never ends, with a background child that tries to outlive it. -#}
{% extends '//die/sh.sh' %}
{% block build %}
( trap '' HUP TERM; sleep 100000 ) &
echo "forever {{ tag | default('x') }} started"
while :; do sleep 1; done
{% endblock %}
