{#- Stage 0: host programs captured into the store (docs/recipes.md, "Stage 0").

    The recipe names programs (`programs`: names found on `ix_boot_path`, or absolute
    paths) and folders (`folders`); `host_capture` says which files that is, with the
    libraries and the loader the programs need (from their ELF dependencies) and the sha256
    of each file. The script copies exactly those bytes (checked), each at its host path
    below $out, and links bin/NAME to each program. This build alone sees the host's system
    folders (`host_view` build); the builds that use it do not.

    A captured program is dynamically linked against the host's loader path, which no
    sandbox after stage 0 has: its ELF file moves to `.ix-real/` beside it and ix's launcher
    (launch.c, a static program) takes its place, with a copy of the loader (`.ix-ld.so`)
    and the captured library folders (`.ix-ld.path`). `launcher` makes $tmp/launch. -#}
{% extends '//die/base.json' %}
{% block host_view %}build{% endblock %}
{% block script_json %}{{ {"exec": ["/bin/sh", "-s"], "data": self.script()} | jd }}{% endblock %}
{% if false %}
{% block script %}
{% set captured = host_capture(self.programs() | parse_list, self.folders() | parse_list) %}
set -eu
# the host's own tools copy the host's files (this build alone sees them)
export PATH=/usr/bin:/bin
# the capture of {{ self.programs() | parse_list | join(' ') }}: manifest sha256 {{ captured.digest }}
{{ self.launcher() }}
libs="{% for d in captured.library_dirs %}{{ ':' if not loop.first }}$out{{ d }}{% endfor %}"
: > "$tmp/sums"
while read -r kind one two three; do
    case "$kind" in
        F)  # MODE SHA256 PATH: a file
            mkdir -p "$out${three%/*}"
            cp "$three" "$out$three"
            chmod "$one" "$out$three"
            echo "$two  $out$three" >> "$tmp/sums"
            ;;
        L)  # TARGET PATH: a link
            mkdir -p "$out${two%/*}"
            ln -s "$one" "$out$two"
            ;;
        X)  # SHA256 PATH: a dynamically linked program, started by the launcher
            dir=${two%/*}
            mkdir -p "$out$dir/.ix-real"
            cp "$two" "$out$dir/.ix-real/${two##*/}"
            chmod 755 "$out$dir/.ix-real/${two##*/}"
            echo "$one  $out$dir/.ix-real/${two##*/}" >> "$tmp/sums"
            cp "$tmp/launch" "$out$two"
            chmod 755 "$out$two"
            if [ ! -e "$out$dir/.ix-ld.so" ]; then
                cp "$out{{ captured.loader }}" "$out$dir/.ix-ld.so"
                echo "$libs" > "$out$dir/.ix-ld.path"
            fi
            ;;
        B)  # NAME PATH: bin/NAME
            mkdir -p "$out/bin"
            ln -s "..$two" "$out/bin/$one"
            ;;
    esac
done <<'IX_CAPTURE'
{{ captured }}
IX_CAPTURE
# what was copied is what the manifest (and so the uid) says
sha256sum --check --quiet --strict "$tmp/sums"
{{ self.wrappers() }}
echo 'export PATH="'"$out"'/bin:${PATH:-}"' > "$out/env"
{% endblock %}
{% block programs %}{% endblock %}
{% block folders %}{% endblock %}
{% block launcher %}{% endblock %}
{% block wrappers %}{% endblock %}
{% endif %}
