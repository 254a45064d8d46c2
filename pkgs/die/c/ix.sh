{#- A C or C++ package, built with the toolchain the flag `cc` names: clang by default
    (bld/boot/1/clang: stage 0's clang and lld, captured from the host; with the setting
    `ix_tools=host`, bld/host/clang: the host's own), `--cc=gcc` for the host gcc
    (bld/host/gcc, not hermetic).
    The toolchain compiles against lib/c (musl from source) and links statically: it induces
    lib/c, and its runtime library (clang: lib/compiler_rt/builtins), into every package's
    target libraries (its ind_deps), so recipes list only their other libraries in bld_libs.
    A C++ package lists lib/c++ there (as in stal/IX); only the compilers named in
    `compilers` can build a package (C++: clang alone), the other one is refused by name.

    Compiler flags come from the blocks cpp_defines (NAME or NAME=VALUE lines), cpp_includes
    (folders), c_flags, cxx_flags and ld_flags; a library names what to link in `libs`, which
    its env adds to $LIBS of its dependents with -I/-L for its include/ and lib/. -#}
{% extends '//die/sh.sh' %}
{% block std_tools %}
{{ super() }}
{{ self.c_compiler() }}
{% endblock %}
{% block setup %}
{{ super() }}
# the platform to compile for (the compiler is a host tool: it learns it from the package)
export IX_TARGET={{ target.gnu_arch }}-unknown-linux-musl
export CC=cc
export CXX=c++
export AR=ar
export RANLIB=ranlib
export NM=nm
export CPPFLAGS="{% for d in self.cpp_defines() | parse_list %}-D{{ d }} {% endfor %}{% for d in self.cpp_includes() | parse_list %}-I{{ d }} {% endfor %}${CPPFLAGS:-}"
export CFLAGS="{{ self.c_flags() | fix_list }} ${CFLAGS:-}"
export CXXFLAGS="{{ self.cxx_flags() | fix_list }} ${CXXFLAGS:-}"
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
{% set compiler = cc or 'clang' %}
{% set able = self.compilers() | parse_list %}
{% if compiler in ('clang', 'gcc') and compiler not in able %}
{% set why = 'it is C++ (it links lib/c++): ' if 'lib/c++' in self.bld_libs() | parse_list else ('it is built for ' ~ target.name ~ ' (the host gcc builds for the host alone): ' if not native else '') %}
{{ ix.error(why ~ '--cc=' ~ compiler ~ ' cannot build it; the compilers that can: ' ~ (able | join(', '))) }}
{% endif %}
{% if compiler == 'clang' and ix_tools != 'host' %}
{# ixd's default chain: stage 0's clang, wrapped by stage 1 (docs/recipes.md, "Stages") #}
bld/boot/1/clang
{% else %}
{# a compiler ix does not have is a recipe no overlay holds: the daemon lists those it has #}
bld/host/{{ compiler }}
{% endif %}
{% endblock %}
{% block compilers %}
{# clang builds for any target (--target=); the host's gcc only for the host #}
{% if 'lib/c++' in self.bld_libs() | parse_list or not native %}
clang
{% else %}
clang
gcc
{% endif %}
{% endblock %}
{% block cpp_defines %}{% endblock %}
{% block cpp_includes %}{% endblock %}
{% block c_flags %}
-O2
{% endblock %}
{% block cxx_flags %}
-O2
{% endblock %}
{% block ld_flags %}{% endblock %}
{% block libs %}{% endblock %}
{% endif %}
