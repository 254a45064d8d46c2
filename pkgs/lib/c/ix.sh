{#- musl, the C library of every C package: the toolchain (bld/host/cc or bld/host/clang)
    induces it into their target libraries and compiles against it through $IX_LIBC, which
    this package's env sets. Static only (no dynamic loader is built or installed).

    lib/ix-gcc.specs is the gcc specs file the gcc wrapper uses: musl's headers instead of
    the host's, musl's start files, libgcc from the host gcc, and a static link that only
    searches the folders given on the command line. It is built with the bare host compiler
    (`libc=none`), the one named by the flag `cc` like every C package. -#}
{% extends '//die/c/make.sh' %}
{% block pkg_name %}musl{% endblock %}
{% block version %}1.2.3{% endblock %}
{% block fetch %}
https://musl.libc.org/releases/musl-1.2.3.tar.gz
sha:7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4
{% endblock %}
{% block c_compiler %}
{{ super() | strip }}(libc=none)
{% endblock %}
{% block configure %}
./configure \
    --prefix="$out" \
    --disable-shared \
    --enable-static \
    --disable-wrapper
{% endblock %}
{% block install %}
make install
cat > "$out/lib/ix-gcc.specs" <<IX_SPECS
%rename cpp_options old_cpp_options

*cpp_options:
-nostdinc -isystem $out/include -isystem include%s %(old_cpp_options)

*cc1:
%(cc1_cpu) -nostdinc -isystem $out/include -isystem include%s

*link_libgcc:
-L$out/lib -L .%s

*libgcc:
libgcc.a%s %:if-exists(libgcc_eh.a%s)

*startfile:
$out/lib/crt1.o $out/lib/crti.o crtbeginT.o%s

*endfile:
crtend.o%s $out/lib/crtn.o

*link:
-nostdlib -static %{rdynamic:-export-dynamic}

*esp_link:


*esp_options:


*esp_cpp_options:


IX_SPECS
{% endblock %}
{% block env %}
export IX_LIBC="$out"
{% endblock %}
