{#- A service package of shell alone (no C program to build): the realm gets
    etc/services/svc-TAG/run, which runs `sleep` (a real service under runsvdir) after
    writing `ran as UID` into its service folder. `note` goes into `run` as a comment: a
    new note is a new generation of the same service. -#}
{% extends '//die/sh.sh' %}
{% block install %}
srv="$out/etc/services/svc-{{ tag | default('x') }}"
mkdir -p "$srv"
cat > "$srv/run" <<'IX_RUN'
#!/bin/sh
# {{ note | default('first') }}
echo "ran as $(id -u)" > ./ran
exec sleep 3600
IX_RUN
chmod +x "$srv/run"
{% endblock %}
