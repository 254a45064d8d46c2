{#- `wave`: a shell script program, no compiler needed. -#}
{% extends '//die/sh.sh' %}
{% block version %}1.0{% endblock %}
{% block install %}
mkdir -p "$out/bin" "$out/share/wave"
cat > "$out/bin/wave" <<'IX_SRC'
#!/bin/sh
echo "o/ ${1:-everyone}"
IX_SRC
chmod +x "$out/bin/wave"
echo "{{ wave_style | default('plain') }}" > "$out/share/wave/style"
{% endblock %}
