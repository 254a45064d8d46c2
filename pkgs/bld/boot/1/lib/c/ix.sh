{#- Stage 1's C library: musl, built by stage 0's clang (bld/boot/1/cc with `libc=none`)
    and the seed's shell and make, for the programs of stage 1. Static only. -#}
{% extends '//die/sh.sh' %}
{% block pkg_name %}musl{% endblock %}
{% block version %}1.2.3{% endblock %}
{% block fetch %}
https://musl.libc.org/releases/musl-1.2.3.tar.gz
sha:7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4
{% endblock %}
{% block std_tools %}
bld/boot/0/seed
bld/boot/1/cc(libc=none)
{% endblock %}
{% block configure %}
./configure --prefix="$out" --disable-shared --enable-static --disable-wrapper
{% endblock %}
{% block build %}
make -j "$make_thrs"
{% endblock %}
{% block install %}
make install
{% endblock %}
{% block env %}
export IX_LIBC="$out"
{% endblock %}
