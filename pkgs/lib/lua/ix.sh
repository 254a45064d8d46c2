{#- The Lua 5.4 library (liblua.a and its headers), POSIX flavour, no dynamic loading. -#}
{% extends 'lua.sh' %}
{% block build %}
make -C src -j "$make_thrs" liblua.a \
    CC="$CC -std=gnu99" CFLAGS="$CPPFLAGS $CFLAGS -Wall -Wextra" AR="$AR rc" RANLIB="$RANLIB"
{% endblock %}
{% block install %}
mkdir -p "$out/lib" "$out/include"
cp src/liblua.a "$out/lib/"
for h in lua.h luaconf.h lualib.h lauxlib.h lua.hpp; do
    cp "src/$h" "$out/include/"
done
{% endblock %}
{% block libs %}
-llua
-lm
{% endblock %}
