{#- A C++ program asking its runtime for everything (main.cc): exceptions across threads,
    iostreams, threads, thread_local and static destructors, RTTI. Built like any C++
    package: clang, lib/c++ in bld_libs. -#}
{% extends '//die/c/ix.sh' %}
{% block version %}1.0{% endblock %}
{% block bld_libs %}
lib/c++
{% endblock %}
{% block unpack %}
base64 -d > main.cc <<'IX_SRC'
{% include 'main.cc/base64' %}
IX_SRC
{% endblock %}
{% block build %}
$CXX $CPPFLAGS $CXXFLAGS -std=c++17 $LDFLAGS main.cc -o cxxrt $LIBS
{% endblock %}
{% block install %}
mkdir -p "$out/bin"
cp cxxrt "$out/bin/"
{% endblock %}
