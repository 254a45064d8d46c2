{#- The shell and the POSIX tools every shell build uses, from the host. -#}
{% extends '../tool.sh' %}
{% block host_tools %}
sh cat cp mv rm mkdir rmdir ln ls chmod echo printf test [ tr sed grep awk head tail sort uniq
wc tar gzip xz bzip2 base64 env dirname basename find xargs touch true false expr cut tee diff
cmp mktemp readlink realpath install date uname od sleep id pwd stat sha256sum patch
hostname nproc
{% endblock %}
