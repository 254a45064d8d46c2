{#- xz, unxz and xzcat, linked against lib/lzma (not the liblzma of its own tree). -#}
{% extends '//lib/lzma/xz.sh' %}
{% block bld_libs %}
lib/lzma
{% endblock %}
{% block build %}
make -C lib -j "$make_thrs"
# xz alone, its liblzma.la replaced by lib/lzma's -llzma (in $LIBS)
make -C src/xz -j "$make_thrs" \
    xz_LDADD='$(CAPSICUM_LIB) $(am__append_3) $(LTLIBINTL)' \
    xz_DEPENDENCIES='$(am__append_3)'
{% endblock %}
{% block install %}
mkdir -p "$out/bin"
cp src/xz/xz "$out/bin/xz"
ln -s xz "$out/bin/unxz"
ln -s xz "$out/bin/xzcat"
{% endblock %}
