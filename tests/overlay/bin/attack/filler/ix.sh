{#- Attack: fill the disk, one MiB file after another, in $out and in /tmp. -#}
{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p "$out/share"
echo "filler starts"
i=0
while :; do
    head -c 1048576 /dev/zero > "$out/share/f$i" || true
    head -c 1048576 /dev/zero > "/tmp/f$i" || true
    i=$((i + 1))
done
{% endblock %}
