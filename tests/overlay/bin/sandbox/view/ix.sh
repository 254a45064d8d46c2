{#- What a build on ixd's default chain sees of the machine: the top folders of its root,
    what /usr/bin and /bin hold, where /bin/sh leads, whether a host compiler is found. -#}
{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p "$out/share"
ls -a / > "$out/share/root"
ls -a /usr/bin /bin > "$out/share/bin" 2>&1 || true
readlink /bin/sh > "$out/share/sh"
command -v gcc cc clang perl python3 > "$out/share/found" 2>&1 || true
{% endblock %}
