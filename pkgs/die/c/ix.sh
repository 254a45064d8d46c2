{#- A C package, built with the C toolchain that the flag `cc` names (`--cc=clang` selects
    bld/host/clang; the default is bld/host/cc, the host gcc). The toolchain compiles against
    lib/c (musl from source) and links statically: it induces lib/c into every C package's
    target libraries (its ind_deps), so recipes list only their other libraries in bld_libs.

    Compiler flags come from the blocks cpp_defines (NAME or NAME=VALUE lines), cpp_includes
    (folders), c_flags and ld_flags; a library names what to link in `libs`, which its env
    adds to $LIBS of its dependents with -I/-L for its include/ and lib/. -#}
{% extends '//die/sh.sh' %}
{% block std_tools %}
{{ super() }}
{{ self.c_compiler() }}
{% endblock %}
{% block setup %}
{{ super() }}
export CC=cc
export AR=ar
export RANLIB=ranlib
export CPPFLAGS="{% for d in self.cpp_defines() | parse_list %}-D{{ d }} {% endfor %}{% for d in self.cpp_includes() | parse_list %}-I{{ d }} {% endfor %}${CPPFLAGS:-}"
export CFLAGS="{{ self.c_flags() | fix_list }} ${CFLAGS:-}"
export LDFLAGS="-static {{ self.ld_flags() | fix_list }} ${LDFLAGS:-}"
export LIBS="${LIBS:-}"
{% endblock %}
{% block env %}
{{ super() }}
{% if lib %}
export CPPFLAGS="-I$out/include \${CPPFLAGS:-}"
export LDFLAGS="-L$out/lib \${LDFLAGS:-}"
export LIBS="{{ self.libs() | fix_list }} \${LIBS:-}"
{% endif %}
{% endblock %}
{% if false %}
{% block c_compiler %}
{% if ix_tools == 'host' %}
{% if cc and cc not in ('cc', 'gcc') %}
bld/host/{{ cc }}
{% else %}
bld/host/cc
{% endif %}
{% elif cc and cc not in ('cc', 'clang') %}
bld/host/{{ cc }}
{% else %}
bld/boot/1/cc
{% endif %}
{% endblock %}
{% block cpp_defines %}{% endblock %}
{% block cpp_includes %}{% endblock %}
{% block c_flags %}
-O2
{% endblock %}
{% block ld_flags %}{% endblock %}
{% block libs %}{% endblock %}
{% endif %}
