{#- Writes `mb` MiB (default 1) of work files into its scratch ($tmp), then a tiny output:
    a build whose work takes room (`tag` tells packages apart). -#}
{% extends '//die/sh.sh' %}
{% block build %}
head -c $(( {{ mb | default('1') }} * 1048576 )) /dev/zero > work.bin
{% endblock %}
{% block install %}
mkdir -p "$out/share"
echo "scratchy {{ tag | default('x') }}" > "$out/share/scratchy"
{% endblock %}
