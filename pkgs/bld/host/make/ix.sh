{#- GNU make from the host. -#}
{% extends '//die/host.sh' %}
{% block host_tools %}
make
{% endblock %}
