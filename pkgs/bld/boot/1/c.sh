{#- A program of stage 1: built from upstream source by stage 0's seed (shell, make, tools)
    and stage 1's C toolchain (bld/boot/1/cc: stage 0's clang against stage 1's C library,
    bld/boot/1/lib/c), static. -#}
{% extends '//die/sh.sh' %}
{% block std_tools %}
bld/boot/0/seed
bld/boot/1/cc(libc=boot)
{% endblock %}
{% block setup %}
{{ super() }}
export CFLAGS="-O2"
{% endblock %}
{% block build %}
make -j "$make_thrs"
{% endblock %}
