{#- Attack: fill the disk as fast as the build can, files of `mb` MiB (default 8) of zeros,
    four writers at once, printing how many MiB each has written. -#}
{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p "$out/share"
burst() {
    i=0
    while head -c {{ mb | default('8') }}M /dev/zero > "$out/share/w$1-$i"; do
        i=$((i + 1))
        echo "writer $1: $((i * {{ mb | default('8') }})) MiB"
    done
}
burst 1 & burst 2 & burst 3 & burst 4
wait
{% endblock %}
