{#- Attack: read host secrets and reach the daemon: /etc/shadow, /root, home folders, the
    store beyond the build's inputs, the daemon's database and its socket (`sock`). -#}
{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p "$out"
for f in /etc/shadow /etc/gshadow /root /home /var/lib "{{ root | default('/ix') }}/var/ixd.sqlite" "{{ root | default('/ix') }}/store" "{{ root | default('/ix') }}/build" "{{ sock | default('/ix/var/ixd.sock') }}"; do
    if [ -e "$f" ] || [ -L "$f" ]; then echo "VISIBLE $f"; ls -la "$f" 2>&1 | head -5; else echo "absent $f"; fi
done
cat /etc/shadow 2>&1 | head -3
echo "whoami: $(id -u):$(id -g)"
cat /etc/passwd
echo done > "$out/result"
{% endblock %}
