{#- CMake from the host (until ix builds its own). -#}
{% extends '../tool.sh' %}
{% block host_tools %}
cmake
{% endblock %}
