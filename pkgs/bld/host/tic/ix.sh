{#- The host's terminfo compiler and dumper (ncurses builds its fallback terminal
    descriptions with them). -#}
{% extends '../tool.sh' %}
{% block host_tools %}
tic infocmp
{% endblock %}
