{#- A host tool wrapped as a package: its bin/ links the host's programs named in
    `host_tools` (the first found in the host's system folders). It runs with absolute
    paths only, since it is what puts tools on other builds' PATH. Every build that uses it
    sees the host's system folders (`host_view` tool): it is not hermetic. -#}
{% extends '//die/base.json' %}
{% block host_view %}tool{% endblock %}
{% block script_json %}{{ {"exec": ["/bin/sh", "-s"], "data": self.script()} | jd }}{% endblock %}
{% if false %}
{% block script %}
set -eu
/bin/mkdir -p "$out/bin"
for tool in {{ self.host_tools() | fix_list }}; do
    for dir in /usr/local/bin /usr/bin /bin /usr/sbin /sbin; do
        if [ -x "$dir/$tool" ]; then
            /bin/ln -s "$dir/$tool" "$out/bin/$tool"
            break
        fi
    done
    if [ ! -e "$out/bin/$tool" ]; then
        echo "host tool $tool not found in the host's system folders" >&2
        exit 1
    fi
done
{{ self.wrappers() }}
echo 'export PATH="'"$out"'/bin:${PATH:-}"' > "$out/env"
{% endblock %}
{% block host_tools %}{% endblock %}
{% block wrappers %}{% endblock %}
{% endif %}
