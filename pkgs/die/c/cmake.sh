{#- A CMake package, generated for Ninja and built by it (stal/IX's die/c/cmake.sh): `cmake -G
    Ninja` of the source folder `cmake_srcdir` into $tmp/obj with `cmake_flags` (NAME=VALUE
    lines, each a -D), then `ninja` of `ninja_build_targets` (all by default) and of
    `ninja_install_targets` (install). The compilers, flags and libraries are the C
    package's (//die/c/ix.sh); CMake searches none of the host's folders for what it finds. -#}
{% extends '//die/c/ix.sh' %}
{% block std_tools %}
{{ super() }}
bld/host/cmake
bld/host/ninja
{% endblock %}
{% block configure %}
cmake -G Ninja -S {{ self.cmake_srcdir() | strip }} -B "$tmp/obj" -Wno-dev \
    -DCMAKE_INSTALL_PREFIX="$out" \
    -DCMAKE_INSTALL_LIBDIR=lib \
    -DCMAKE_C_COMPILER="$(command -v "$CC")" \
    -DCMAKE_CXX_COMPILER="$(command -v "$CXX")" \
    -DCMAKE_AR="$(command -v "$AR")" \
    -DCMAKE_RANLIB="$(command -v "$RANLIB")" \
    -DCMAKE_NM="$(command -v "$NM")" \
    {% for flag in self.cmake_flags() | parse_list %}
    -D{{ flag }} \
    {% endfor %}
    {{ self.cmake_extra_flags() | fix_list }}
{% endblock %}
{% block build %}
ninja -C "$tmp/obj" -j "$make_thrs" {{ self.ninja_build_targets() | fix_list }}
{% endblock %}
{% block install %}
ninja -C "$tmp/obj" {{ self.ninja_install_targets() | fix_list }}
{% endblock %}
{% if false %}
{% block cmake_srcdir %}
.
{% endblock %}
{% block cmake_flags %}
CMAKE_BUILD_TYPE=Release
BUILD_SHARED_LIBS=OFF
BUILD_TESTING=OFF
CMAKE_SKIP_RPATH=ON
CMAKE_FIND_USE_CMAKE_SYSTEM_PATH=OFF
{% if not native %}
CMAKE_SYSTEM_NAME={{ target.cmake_system_name }}
CMAKE_SYSTEM_PROCESSOR={{ target.arch }}
{% endif %}
{% endblock %}
{% block cmake_extra_flags %}{% endblock %}
{% block ninja_build_targets %}{% endblock %}
{% block ninja_install_targets %}
install
{% endblock %}
{% endif %}
