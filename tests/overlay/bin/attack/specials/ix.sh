{#- Attack: an output holding a FIFO, links to /dev/zero where the daemon reads (meta.json,
    env, programs), a socket, and a huge sparse file. -#}
{% extends '//die/sh.sh' %}
{# it copies or runs the host's own programs: it reads the host #}
{% block host_view %}build{% endblock %}
{% block install %}
mkdir -p "$out/bin" "$out/share"
/usr/bin/mkfifo "$out/share/fifo" "$out/bin/fifo-prog"
ln -s /dev/zero "$out/meta.json"
ln -s /dev/zero "$out/bin/zero"
ln -s /dev/zero "$out/share/zero"
/usr/bin/python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$out/share/sock" 2>/dev/null || true
printf '#!/bin/sh\necho specials\n' > "$out/bin/specials"
chmod +x "$out/bin/specials"
{% endblock %}
