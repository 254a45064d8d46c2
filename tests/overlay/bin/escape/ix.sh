{#- A hostile build: tries to write outside $out; the confinement must stop every write. -#}
{% extends '//die/sh.sh' %}
{% block build %}
for target in "$out/../ix-escape-store" /tmp/ix-escape-tmp /root/ix-escape-home \
              /etc/ix-escape-etc "{{ marker_dir | default('/var/tmp') }}/ix-escape-marker"; do
    if echo escaped > "$target" 2>/dev/null; then
        echo "WROTE $target"
    else
        echo "refused $target"
    fi
done
{% endblock %}
{% block install %}
mkdir -p "$out/share"
echo confined > "$out/share/escape-result"
{% endblock %}
