{#- GNU make from the host. -#}
{% extends '../tool.sh' %}
{% block host_tools %}
make
{% endblock %}
