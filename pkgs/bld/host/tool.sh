{#- A host tool wrapped as a package, as //die/host.sh does, with the host tools' versions in
    its script: an upgrade of a host tool changes the rendered script, hence the wrapper's uid
    and the uid of everything built with it.

    The versions come from `host_versions`, a mapping tool name → version string that the
    daemon puts in the render context (computed once per tool and daemon run). Where it is
    not provided, only the tool names are stamped.

    Recipes name their tools in `host_tools` and write extra wrapper scripts in
    `tool_wrappers`, with absolute paths only (their PATH is empty). -#}
{% extends '//die/host.sh' %}
{% block wrappers %}
{{ self.host_stamp() }}
{{ self.tool_wrappers() }}
{% endblock %}
{% block host_stamp %}
# host tools of {{ name }}:
{% for tool in self.host_tools() | parse_list %}
{% if host_versions is defined %}
# {{ tool }}: {{ host_versions[tool] }}
{% else %}
# {{ tool }}
{% endif %}
{% endfor %}
{% endblock %}
{% block tool_wrappers %}{% endblock %}
