{#- bin/beacon as a runit service (stal/IX's `…/runit` naming): the realm gets
    etc/services/beacon/{run,finish,log/run}, which an `ixc session` copies into the user's
    service tree. The service answers on `beacon.sock` in its service folder and logs
    through svlogd into its `log/main/`.

    `run` names the program by its store path, which it learns at build time (bin/beacon is
    a build tool here, and a run dependency so that the realm holds it too): the service
    runs exactly the program of the realm generation it came from, and a new beacon makes
    a new `run`, which restarts the service. Flag: `beacon_name=NAME` (default: beacon). -#}
{% extends '//die/sh.sh' %}
{% block version %}1.0{% endblock %}
{% block bld_tool %}
{{ super() }}
bin/beacon
{% endblock %}
{% block run_deps %}
bin/beacon
{% endblock %}
{% block install %}
beacon=$(command -v beacon)
case "$beacon" in
    /*) ;;
    *) echo "bin/beacon/runit: beacon is not among the build tools" >&2; exit 1 ;;
esac
srv="$out/etc/services/beacon"
mkdir -p "$srv/log"
cat > "$srv/run" <<IX_RUN
#!/bin/sh
# beacon under runit; the current folder is the service folder
exec 2>&1
exec $beacon -n {{ beacon_name | default('beacon') }} ./beacon.sock
IX_RUN
cat > "$srv/finish" <<'IX_FINISH'
#!/bin/sh
# runsv runs this after each stop of ./run: $1 its exit code (-1 if killed), $2 the signal
echo "beacon ended: exit code $1, signal $2"
IX_FINISH
cat > "$srv/log/run" <<'IX_LOG'
#!/bin/sh
# svlogd keeps ./main/current (rotated there too), each line stamped with its time
mkdir -p ./main
exec svlogd -tt ./main
IX_LOG
chmod +x "$srv/run" "$srv/finish" "$srv/log/run"
{% endblock %}
