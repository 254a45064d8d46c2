{#- Attack: print as fast as the build can, `bytes` bytes (default 3 GB) of short lines of
    build output, then succeed. -#}
{% extends '//die/sh.sh' %}
{% block build %}
echo "flood starts"
awk 'BEGIN { while (1) print "ix flood: a line of build output, printed as fast as it can" }' |
    head -c {{ bytes | default('3000000000') }}
echo
echo "flood ends"
{% endblock %}
{% block install %}
mkdir -p "$out"
echo {{ tag | default('x') }} > "$out/tag"
{% endblock %}
