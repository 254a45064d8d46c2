{#- A C package: the default toolchain is the host's static musl compiler. Compiler flags
    come from the blocks cpp_defines (NAME or NAME=VALUE lines), cpp_includes (folders),
    c_flags and ld_flags; a library names what to link in `libs`. -#}
{% extends '//die/sh.sh' %}
{% block std_tools %}
{{ super() }}
bld/host/cc
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
{% block cpp_defines %}{% endblock %}
{% block cpp_includes %}{% endblock %}
{% block c_flags %}
-O2
{% endblock %}
{% block ld_flags %}{% endblock %}
{% block libs %}{% endblock %}
{% endif %}
