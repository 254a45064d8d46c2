{#- Attack: hard links inside the output and to a file of the build's inputs. -#}
{% extends '//die/sh.sh' %}
{% block bld_libs %}
bin/wave
{% endblock %}
{% block install %}
mkdir -p "$out/share"
echo mine > "$out/share/a"
ln "$out/share/a" "$out/share/b"
for dir in $(echo "$IX_T_DIR" | tr ':' ' '); do
    if ln "$dir/bin/wave" "$out/share/stolen" 2>/dev/null; then echo "LINKED input"; else echo "refused link to input"; fi
done
{% endblock %}
