{#- `beacon [-n NAME] SOCKET`: a tiny daemon answering on a Unix socket, built from
    beacon.c beside this recipe. `bin/beacon/runit` runs it as a runit service. -#}
{% extends '//die/c/ix.sh' %}
{% block version %}1.0{% endblock %}
{% block unpack %}
base64 -d > beacon.c <<'IX_SRC'
{% include 'beacon.c/base64' %}
IX_SRC
{% endblock %}
{% block build %}
$CC $CPPFLAGS $CFLAGS $LDFLAGS beacon.c -o beacon $LIBS
{% endblock %}
{% block install %}
mkdir -p "$out/bin"
cp beacon "$out/bin/"
{% endblock %}
