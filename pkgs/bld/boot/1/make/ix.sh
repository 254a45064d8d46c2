{#- Stage 1's make: GNU make 4.3, static. Its upstream tarball is not in Debian byte for
    byte: Debian repacks it without the manual (make-dfsg), and without the files autoconf
    and automake generate (`configure`, the Makefile.in), which no stage before this one
    can make. No other make runs GNU makefiles (musl's, BusyBox's Kbuild). So the source is
    Debian's, named as such, and ix supplies what `configure` would find on musl (`config`:
    the values of src/config.h.in's names) and compiles the program's files itself, as
    make's Makefile.am lists them (the gnulib files a musl system needs: glob, fnmatch and
    make's helpers). -#}
{% extends '../c.sh' %}
{% block version %}4.3{% endblock %}
{% block fetch %}
deb-src://make-dfsg/4.3-4.1/make-dfsg_4.3.orig.tar.gz
sha:be4c17542578824e745f83bcd2a9ba264206187247cb6a5f5df99b0a9d1f9047
{% endblock %}
{% block configure %}
base64 -d > "$tmp/config" <<'IX_CONFIG'
{% include 'config/base64' %}
IX_CONFIG
# `#undef NAME` of config.h.in becomes `#define NAME VALUE` for each NAME of the config
awk 'NR == FNR { if ($0 !~ /^#/ && NF) { n = $1; $1 = ""; v[n] = substr($0, 2) } next }
    /^# *undef [A-Za-z_0-9]*$/ && ($NF in v) {
        n = $NF; sub(/undef.*/, "define " n " " v[n]); print; next }
    { print }' "$tmp/config" src/config.h.in \
    | sed 's/IX_MAKE_HOST/"{{ target.gnu.three }}-musl"/' > src/config.h
# musl's glob and fnmatch lack GNU's extensions: make's own, as configure chooses there
cp lib/glob.in.h lib/glob.h
cp lib/fnmatch.in.h lib/fnmatch.h
{% endblock %}
{% block build %}
flags="-DHAVE_CONFIG_H -Isrc -Ilib -DLIBDIR=\"$out/lib\" -DINCLUDEDIR=\"$out/include\" \
    -DLOCALEDIR=\"$out/share/locale\""
mkdir objects
for file in {{ self.make_sources() | fix_list }} {{ self.gnulib_sources() | fix_list }}; do
    echo "compiling $file"
    $CC $CFLAGS $flags -c "$file" -o "objects/$(echo "$file" | tr / _).o"
done
$AR rc objects/libgnu.a objects/lib_*.o
$CC $CFLAGS -o make objects/src_*.o objects/libgnu.a
{% endblock %}
{% block install %}
mkdir -p "$out/bin" "$out/include"
cp make "$out/bin/make"
cp src/gnumake.h "$out/include/"
{% endblock %}
{% if false %}
{% block make_sources %}
src/ar.c src/arscan.c src/commands.c src/default.c src/dir.c src/expand.c src/file.c
src/function.c src/getopt.c src/getopt1.c src/guile.c src/hash.c src/implicit.c src/job.c
src/load.c src/loadapi.c src/main.c src/misc.c src/output.c src/read.c src/remake.c
src/rule.c src/signame.c src/strcache.c src/variable.c src/version.c src/vpath.c
src/posixos.c src/remote-stub.c
{% endblock %}
{% block gnulib_sources %}
lib/concat-filename.c lib/dirname-lgpl.c lib/basename-lgpl.c lib/stripslash.c
lib/exitfail.c lib/fd-hook.c lib/findprog-in.c lib/getprogname.c lib/fnmatch.c lib/glob.c
lib/xconcat-filename.c lib/xmalloc.c lib/xalloc-die.c
{% endblock %}
{% endif %}
