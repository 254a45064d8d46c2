{#- Stage 1: the shell, make and small tools every build after it runs with (die/sh.sh's
    std_tools), all built from source by stage 0. -#}
{% extends '//die/hub.sh' %}
{% block run_deps %}
bld/boot/1/sh
bld/boot/1/make
bld/boot/1/busybox
{% endblock %}
