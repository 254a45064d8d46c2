{#- A C library that drags lib/shout into everything linking it (lib_deps).
    With the flag `shout` the greeting is printed in capitals. -#}
{% extends '//die/c/ix.sh' %}
{% block version %}1.0{% endblock %}
{% block lib_deps %}
lib/shout
{% endblock %}
{% block bld_libs %}
lib/shout
{% endblock %}
{% block cpp_defines %}
{% if shout %}
GREET_SHOUT=1
{% endif %}
{% endblock %}
{% block unpack %}
base64 -d > greet.c <<'IX_SRC'
{% include 'greet.c/base64' %}
IX_SRC
base64 -d > greet.h <<'IX_SRC'
{% include 'greet.h/base64' %}
IX_SRC
{% endblock %}
{% block build %}
$CC $CPPFLAGS $CFLAGS -c greet.c -o greet.o
$AR rcs libgreet.a greet.o
{% endblock %}
{% block install %}
mkdir -p "$out/lib" "$out/include"
cp libgreet.a "$out/lib/"
cp greet.h "$out/include/"
{% endblock %}
{% block libs %}
-lgreet
{% endblock %}
