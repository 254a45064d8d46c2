{#- The host's Python 3 (LLVM's runtimes build asks for it). -#}
{% extends '../tool.sh' %}
{% block host_tools %}
python3
{% endblock %}
