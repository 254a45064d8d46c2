{#- less, the pager, with the terminal library of lib/ncurses and POSIX regular expressions
    from the C library. -#}
{% extends '//die/c/configure.sh' %}
{% block version %}590{% endblock %}
{% block fetch %}
https://www.greenwoodsoftware.com/less/less-590.tar.gz
sha:6aadf54be8bf57d0e2999a3c5d67b1de63808bb90deb8f77b028eafae3a08e10
{% endblock %}
{% block bld_libs %}
lib/ncurses
{% endblock %}
{% block configure_flags %}
{{ super() }}
--with-regex=posix
{% endblock %}
