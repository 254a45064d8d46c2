{#- Attack: rewrite, remove or re-mode what the store holds: the build's own inputs (here the
    `victim` package), and any other entry whose path is given in `victim_path`. -#}
{% extends '//die/sh.sh' %}
{% block bld_libs %}
{{ victim | default('bin/wave') }}
{% endblock %}
{% block install %}
mkdir -p "$out"
for dir in $(echo "$IX_T_DIR" | tr ':' ' ') {{ victim_path | default('') }}; do
    for f in "$dir"/bin/* "$dir"/share/*/*; do
        [ -e "$f" ] || continue
        if ( echo 'echo pwned' > "$f" ) 2>/dev/null; then echo "WROTE $f"; else echo "refused write $f"; fi
        if chmod 777 "$f" 2>/dev/null; then echo "CHMODDED $f"; else echo "refused chmod $f"; fi
        if rm -f "$f" 2>/dev/null && [ ! -e "$f" ]; then echo "REMOVED $f"; else echo "refused rm $f"; fi
    done
done
echo done > "$out/result"
{% endblock %}
