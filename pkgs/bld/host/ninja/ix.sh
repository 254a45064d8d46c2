{#- Ninja from the host (until ix builds its own: bin/ninja is the same program, static). -#}
{% extends '../tool.sh' %}
{% block host_tools %}
ninja
{% endblock %}
