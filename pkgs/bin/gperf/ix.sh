{#- GNU gperf, the perfect hash function generator: C++ (libc++), autoconf.

    Debian's gperf 3.1 tarball is not byte for byte upstream's
    (https://ftp.gnu.org/gnu/gperf/gperf-3.1.tar.gz), so the source is fetched by its Debian
    source package (docs/recipes.md, "Sources"). -#}
{% extends '//die/c/configure.sh' %}
{% block pkg_name %}gperf{% endblock %}
{% block version %}3.1{% endblock %}
{% block fetch %}
deb-src://gperf/3.1-1/gperf_3.1.orig.tar.gz
sha:1f88819b78187350e7e6ca24b5e15cbf4083659773508d3f018b9b525e9d1cb8
{% endblock %}
{% block bld_libs %}
lib/c++
{% endblock %}
{% block cxx_flags %}
{{ super() }}
# C++17 dropped `register`, which gperf 3.1 still writes (as stal/IX)
-Wno-register
{% endblock %}
{% block build %}
make -C lib -j "$make_thrs"
make -C src -j "$make_thrs"
{% endblock %}
{% block install %}
make -C src install
{% endblock %}
