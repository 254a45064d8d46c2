{#- The host's static musl C toolchain: `cc` runs the host gcc with musl's specs and links
    statically; binutils come along. -#}
{% extends '//die/host.sh' %}
{% block host_tools %}
gcc musl-gcc ar ranlib strip nm ld as objcopy
{% endblock %}
{% block wrappers %}
for name in cc musl-cc; do
    printf '#!/bin/sh\nREALGCC=%s exec %s -static "$@"\n' "$out/bin/gcc" "$out/bin/musl-gcc" > "$out/bin/$name"
    /bin/chmod +x "$out/bin/$name"
done
{% endblock %}
