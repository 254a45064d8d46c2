{#- Writes `count` small files (default 20000) in 100 folders: a large tree for the daemon to
    canonicalise, hash and register. -#}
{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p "$out/share"
cd "$out/share"
awk -v n={{ count | default('20000') }} 'BEGIN { for (i = 0; i < n; i++) { d = "d" (i % 100); if (i < 100) system("mkdir " d); f = d "/f" i; print i > f; close(f) } }'
echo "many files written"
{% endblock %}
