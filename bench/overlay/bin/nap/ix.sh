{#- bench/nix.py's build: what its Nix derivation does, `/bin/sleep SECS` and the shell's
    own `echo` into the output, and nothing else (no env sourced, no unpack loop, no env
    file): the two daemons are timed on the same work. The host's shell and sleep are seen
    through bld/host/sh (`host_view: tool`), as Nix's sandbox shows the host's /bin.
    Different tags are different packages. -#}
{% extends '//die/base.json' %}
{% block bld_tool %}
bld/host/sh
{% endblock %}
{% block script_json %}
{{ {"exec": ["/bin/sh", "-s"],
    "data": "/bin/sleep " ~ (secs | default('1')) ~ "\necho nap-" ~ (tag | default('x'))
            ~ " > \"$out/nap-" ~ (tag | default('x')) ~ "\"\n"} | jd }}
{% endblock %}
