{#- Ninja, the small build system: C++ (libc++), built by CMake. Its lexers come generated
    in the release (no re2c). -#}
{% extends '//die/c/cmake.sh' %}
{% block pkg_name %}ninja{% endblock %}
{% block version %}1.11.1{% endblock %}
{% block fetch %}
https://github.com/ninja-build/ninja/archive/refs/tags/v1.11.1.tar.gz
sha:31747ae633213f1eda3842686f83c2aa1412e0f5691d1c14dbbcc67fe7400cea
{% endblock %}
{% block bld_libs %}
lib/c++
{% endblock %}
{% block patch %}
# no link-time optimisation (as stal/IX): a plain build, and a shorter one
sed -e 's|.*CMAKE_INTERPROCEDURAL_OPTIMIZATION_RELEASE.*||' -i CMakeLists.txt
{% endblock %}
