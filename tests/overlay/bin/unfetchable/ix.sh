{#- A package whose source no host serves (a closed local port): what a daemon without a
    mirror says when upstream hosts are out of reach. -#}
{% extends '//die/sh.sh' %}
{% block fetch %}
http://127.0.0.1:9/unfetchable-1.0.tar.gz
sha:0000000000000000000000000000000000000000000000000000000000000001
{% endblock %}
