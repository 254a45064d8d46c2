{#- A shell build: the script runs `unpack`, `patch`, `configure`, `build`, `test` and
    `install` in order, after sourcing the `env` of every tool and library. Its tools are
    stage 1's shell, make and small tools, built from source (bld/boot/1/env), or the
    host's with the setting `ix_tools=host` (docs/recipes.md, "Stages"). -#}
{% extends '//die/base.json' %}
{% block script_json %}{{ {"exec": ["/bin/sh", "-s"], "data": self.script()} | jd }}{% endblock %}
{% block bld_tool %}
{{ self.std_tools() }}
{% endblock %}
{% if false %}
{% block std_tools %}
{% if ix_tools == 'host' %}
bld/host/sh
{% else %}
bld/boot/1/env
{% endif %}
{% endblock %}
{% block script %}
set -eu
{% if setx %}
set -x
{% endif %}
ix_source() {
    _ix_list="$1"
    while [ -n "$_ix_list" ]; do
        _ix_dir="${_ix_list%%:*}"
        case "$_ix_list" in *:*) _ix_list="${_ix_list#*:}" ;; *) _ix_list="" ;; esac
        if [ -f "$_ix_dir/env" ]; then . "$_ix_dir/env"; fi
    done
}
ix_source "$IX_B_DIR"
ix_source "$IX_H_DIR"
ix_source "$IX_T_DIR"
{{ self.setup() }}
mkdir -p "$tmp/w"
cd "$tmp/w"
{% if simulate_failure %}
echo "simulated failure of {{ name }}" >&2
exit 1
{% endif %}
{{ self.unpack() }}
{{ self.patch() }}
{{ self.configure() }}
{{ self.build() }}
{{ self.test() }}
{{ self.install() }}
cat > "$out/env" <<IX_ENV_EOF
{{ self.env() }}
IX_ENV_EOF
{{ self.postinstall() }}
{% endblock %}
{% block setup %}{% endblock %}
{% block unpack %}
for _ix_s in "$src"/*; do
    [ -e "$_ix_s" ] || continue
    case "$_ix_s" in
        # the sandbox maps no other owners: keep files ours, whoever packed them
        *.tar|*.tar.*|*.tgz) tar --no-same-owner -xf "$_ix_s" ;;
        *) cp "$_ix_s" . ;;
    esac
done
# upstream tarballs hold one top folder: work inside it
set -- */
if [ $# -eq 1 ] && [ -d "$1" ]; then cd "$1"; fi
{% endblock %}
{% block patch %}{% endblock %}
{% block configure %}{% endblock %}
{% block build %}{% endblock %}
{% block test %}{% endblock %}
{% block install %}{% endblock %}
{% block env %}
{% if bin %}
export PATH="$out/bin:\${PATH:-}"
{% endif %}
{% endblock %}
{% block postinstall %}{% endblock %}
{% endif %}
