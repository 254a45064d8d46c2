{#- An autotools package: `./configure` for $out, static only, then make and make install.
    The build and host triplets are the host's and the target's (musl); options go in
    `configure_flags` (call super() to keep the defaults: no NLS, no dependency tracking). -#}
{% extends '//die/c/make.sh' %}
{% block configure %}
./configure \
    --prefix="$out" \
    --build={{ host.gnu.three }} \
    --host={{ target.gnu.three }} \
    --disable-shared \
    --enable-static \
    {{ self.configure_flags() | fix_list }}
{% endblock %}
{% block install %}
make install {{ self.make_flags() | fix_list }}
# gnulib's charset.alias is for the host's libc, not ours; then no empty folders
rm -f "$out/lib/charset.alias"
find "$out" -mindepth 1 -depth -type d -empty -exec rmdir {} \;
{% endblock %}
{% if false %}
{% block configure_flags %}
--disable-nls
--disable-dependency-tracking
{% endblock %}
{% endif %}
