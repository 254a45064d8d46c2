{#- A set: installs both greeting programs. -#}
{% extends '//die/hub.sh' %}
{% block run_deps %}
bin/greet
bin/wave
{% endblock %}
