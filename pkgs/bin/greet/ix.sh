{#- `greet [WHO]` prints a greeting through lib/greet, statically linked.
    Flags: `greeting=WORD` (default Hello); `shout` reaches lib/greet like every flag. -#}
{% extends '//die/c/ix.sh' %}
{% block version %}1.0{% endblock %}
{% block bld_libs %}
lib/greet
{% endblock %}
{% block cpp_defines %}
GREETING=\"{{ greeting | default('Hello') }}\"
{% endblock %}
{% block unpack %}
base64 -d > main.c <<'IX_SRC'
{% include 'main.c/base64' %}
IX_SRC
{% endblock %}
{% block build %}
$CC $CPPFLAGS $CFLAGS $LDFLAGS main.c -o greet $LIBS
{% endblock %}
{% block install %}
mkdir -p "$out/bin"
cp greet "$out/bin/"
{% endblock %}
