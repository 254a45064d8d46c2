{#- Stage 0's seed: the host's shell, make and POSIX tools, captured (../capture.sh) to run
    the scripts of stage 1 and nothing after it. A build script needs a shell and a build
    needs make before any can be built from source: every bootstrap starts from some
    (Nix and Guix from prebuilt seed binaries). ix's is the host's own, content-addressed
    like the compiler: their bytes are in the uid of stage 1, which builds its own shell,
    make and tools from source (bld/boot/1/*); later builds see those, never these. -#}
{% extends '../capture.sh' %}
{% block bld_tool %}
bld/boot/0/clang
{% endblock %}
{% block programs %}
sh
make
cat cp mv rm mkdir rmdir ln ls chmod touch echo printf test true false expr tr sed grep
egrep fgrep awk head tail sort uniq wc cut tee cmp diff find xargs tar gzip bzip2 xz
basename dirname env mktemp readlink realpath install date uname od sleep id pwd stat
sha256sum patch nproc seq base64 yes nl comm join paste fold tac tsort split dd md5sum
sha1sum truncate sync whoami hostname which chgrp chown du
{% endblock %}
{% block launcher %}
# the launcher stage 0's compiler was captured with
for dir in $(echo "$IX_B_DIR" | tr : ' '); do
    if [ -f "$dir/libexec/ix-launch" ]; then
        cp "$dir/libexec/ix-launch" "$tmp/launch"
    fi
done
{% endblock %}
