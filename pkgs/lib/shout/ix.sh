{#- A tiny C library, its sources kept beside the recipe. -#}
{% extends '//die/c/ix.sh' %}
{% block version %}1.0{% endblock %}
{% block unpack %}
base64 -d > shout.c <<'IX_SRC'
{% include 'shout.c/base64' %}
IX_SRC
base64 -d > shout.h <<'IX_SRC'
{% include 'shout.h/base64' %}
IX_SRC
{% endblock %}
{% block build %}
$CC $CPPFLAGS $CFLAGS -c shout.c -o shout.o
$AR rcs libshout.a shout.o
{% endblock %}
{% block install %}
mkdir -p "$out/lib" "$out/include"
cp libshout.a "$out/lib/"
cp shout.h "$out/include/"
{% endblock %}
{% block libs %}
-lshout
{% endblock %}
