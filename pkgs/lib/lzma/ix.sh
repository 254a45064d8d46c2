{#- liblzma, the compression library of XZ Utils. -#}
{% extends 'xz.sh' %}
{% block configure_flags %}
{{ super() }}
--disable-xz
{% endblock %}
{% block libs %}
-llzma
{% endblock %}
