{#- Writes `mb` MiB (default 1) of zeros: fills a small disk on purpose. -#}
{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p "$out/share"
head -c $(( {{ mb | default('1') }} * 1048576 )) /dev/zero > "$out/share/big"
{% endblock %}
