{#- Holds a build slot until the file `until` exists (it never can inside the sandbox, so
    it runs until the daemon's --build-timeout or the end of `secs`), printing its marker. -#}
{% extends '//die/sh.sh' %}
{% block build %}
echo "holding {{ tag | default('x') }}"
sleep {{ secs | default('10') }}
{% endblock %}
{% block install %}
mkdir -p "$out"
echo {{ tag | default('x') }} > "$out/tag"
{% endblock %}
