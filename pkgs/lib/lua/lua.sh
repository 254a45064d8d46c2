{#- Lua 5.4.4's source, shared by lib/lua and bin/lua (lua.org publishes its sha256). -#}
{% extends '//die/c/make.sh' %}
{% block pkg_name %}lua{% endblock %}
{% block version %}5.4.4{% endblock %}
{% block fetch %}
https://www.lua.org/ftp/lua-5.4.4.tar.gz
sha:164c7849653b80ae67bec4b7473b884bf5cc8d2dca05653475ec2ed27b9ebf61
{% endblock %}
{% block cpp_defines %}
LUA_COMPAT_5_3
LUA_USE_POSIX
{% endblock %}
