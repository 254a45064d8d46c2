{#- Attack: take `mb` MiB of memory (default 5120: 5 GiB) in one process, a string doubled
    until it is that long, then succeed. -#}
{% extends '//die/sh.sh' %}
{% block build %}
echo "hog starts"
awk 'BEGIN { s = "x"; while (length(s) < {{ mb | default('5120') }} * 1048576) s = s s; print "hog holds " length(s) " bytes" }'
{% endblock %}
{% block install %}
mkdir -p "$out"
echo {{ tag | default('x') }} > "$out/tag"
{% endblock %}
