{#- Stage 1's small tools: BusyBox's coreutils, sed, grep, awk, find, xargs, diff, patch,
    tar, gzip, bzip2, xz (decompression) and more, as one static program with a link per
    tool (the list: `config`, applied over `allnoconfig`). No shell: that is dash
    (bld/boot/1/sh). -#}
{% extends '../c.sh' %}
{% block version %}1.35.0{% endblock %}
{% block fetch %}
https://busybox.net/downloads/busybox-1.35.0.tar.bz2
sha:faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694
{% endblock %}
{% block configure %}
# no build date in the program (its version line): the same bytes at every build
export KCONFIG_NOTIMESTAMP=1
make allnoconfig
base64 -d > "$tmp/config" <<'IX_CONFIG'
{% include 'config/base64' %}
IX_CONFIG
# the chosen options over allnoconfig's, then the rest from their defaults
awk -F= 'NR == FNR { want[$1] = $0; next }
    { name = $1; if ($0 ~ /^# CONFIG_[A-Za-z0-9_]* is not set$/) { split($0, w, " "); name = w[2] }
      if (!(name in want)) print }
    END { for (n in want) print want[n] }' "$tmp/config" .config > .config.ix
mv .config.ix .config
yes '' | make oldconfig > /dev/null
{% endblock %}
{% block build %}
make -j "$make_thrs" CC="$CC" HOSTCC="$CC" AR="$AR" STRIP=strip KBUILD_VERBOSE=0 \
    SKIP_STRIP=y
{% endblock %}
{% block install %}
mkdir -p "$out/bin"
cp busybox "$out/bin/busybox"
for applet in $(./busybox --list); do
    ln -s busybox "$out/bin/$applet"
done
{% endblock %}
