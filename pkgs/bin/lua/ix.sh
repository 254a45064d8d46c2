{#- The Lua 5.4 interpreter: lua.c from the release, linked against lib/lua. -#}
{% extends '//lib/lua/lua.sh' %}
{% block bld_libs %}
lib/lua
{% endblock %}
{% block build %}
# lua.c and the feature macros it starts with, nothing else: lua.h, luaconf.h and the
# library come from lib/lua
mkdir ../ix-lua
cp src/lua.c src/lprefix.h ../ix-lua/
cd ../ix-lua
$CC $CPPFLAGS $CFLAGS -std=gnu99 -c lua.c -o lua.o
$CC $LDFLAGS lua.o -o lua $LIBS
{% endblock %}
{% block install %}
mkdir -p "$out/bin"
cp lua "$out/bin/"
{% endblock %}
