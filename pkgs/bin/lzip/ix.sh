{#- lzip, the LZMA compressor of the .lz format: C++ (libc++, exceptions), with its own
    configure script (not autoconf's).

    Debian carries lzip 1.23 recompressed (.tar.xz; upstream publishes .tar.gz and .tar.lz,
    https://download.savannah.gnu.org/releases/lzip/lzip-1.23.tar.gz), so the source is
    fetched by its Debian source package (docs/recipes.md, "Sources"). -#}
{% extends '//die/c/make.sh' %}
{% block pkg_name %}lzip{% endblock %}
{% block version %}1.23{% endblock %}
{% block fetch %}
deb-src://lzip/1.23-5/lzip_1.23.orig.tar.xz
sha:d269d8e204579cb7047d6187bce741acb484a27e24cf24f20cf017c48574147c
{% endblock %}
{% block bld_libs %}
lib/c++
{% endblock %}
{% block configure %}
./configure --prefix="$out" CXX="$CXX" CPPFLAGS="$CPPFLAGS" CXXFLAGS="$CXXFLAGS" \
    LDFLAGS="$LDFLAGS"
{% endblock %}
{% block install %}
make install-bin
{% endblock %}
