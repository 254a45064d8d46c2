{#- XZ Utils 5.4.1's source, shared by lib/lzma and bin/xz. -#}
{% extends '//die/c/configure.sh' %}
{% block pkg_name %}xz{% endblock %}
{% block version %}5.4.1{% endblock %}
{% block fetch %}
https://tukaani.org/xz/xz-5.4.1.tar.xz
sha:5d9827aa1875b21c288f78864bb26d2650b436ea8d2cad364e4921eb6266a5a5
{% endblock %}
{% block configure_flags %}
{{ super() }}
--disable-xzdec
--disable-lzmadec
--disable-lzmainfo
--disable-lzma-links
--disable-scripts
--disable-doc
{% endblock %}
