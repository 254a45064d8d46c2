{#- Stage 0's compiler: the host's clang and lld, and the LLVM tools a clang toolchain
    uses in place of binutils, captured (../capture.sh) with clang's resource folder (its
    own headers: stddef.h, the intrinsics). The one input ix takes from the host.

    clang runs its compiler as `CLANG -cc1 ...`, with CLANG the path it finds for itself;
    here that would be the loader (/proc/self/exe), so the driver is told to take its
    argv[0] instead (`-no-canonical-prefixes`, which the launcher gives every driver run but
    not the -cc1 runs) and where its resource folder is (`-resource-dir`: its argv[0] may
    be bin/clang).

    It also builds the launcher, with the host's clang and lld (the very files captured:
    their sha256 are in the manifest), kept as libexec/ix-launch for the other captures. -#}
{% extends '../capture.sh' %}
{% block programs %}
clang
clang++
clang-cpp
ld.lld
llvm-ar
llvm-ranlib
llvm-nm
llvm-strip
llvm-objcopy
llvm-objdump
llvm-readelf
llvm-size
llvm-strings
llvm-addr2line
llvm-cxxfilt
{% endblock %}
{% block folders %}
{{ self.llvm() }}/lib/clang
{% endblock %}
{% block launcher %}
# freestanding (there is no C library yet) and static: the same bytes on every host with
# this clang and lld
base64 -d > "$tmp/launch.c" <<'IX_SRC'
{% include '../launch.c/base64' %}
IX_SRC
"{{ host_program('clang') }}" -O2 -static -nostdlib -ffreestanding -fno-stack-protector \
    -fno-asynchronous-unwind-tables -fuse-ld=lld -Wl,--build-id=none \
    -o "$tmp/launch" "$tmp/launch.c"
mkdir -p "$out/libexec"
cp "$tmp/launch" "$out/libexec/ix-launch"
{% endblock %}
{% block wrappers %}
echo -no-canonical-prefixes > "$out{{ self.llvm() }}/bin/.ix-real/clang.args"
echo "-resource-dir=$(echo "$out{{ self.llvm() }}"/lib/clang/*)" \
    >> "$out{{ self.llvm() }}/bin/.ix-real/clang.args"
{% endblock %}
{% block llvm %}{{ host_program('clang') | dirname | dirname }}{% endblock %}
