{#- ncurses: the terminal library alone (no programs, no C++, no database install), narrow
    characters. Common terminals are compiled in as fallbacks (by tic: bld/tic, ncurses' own
    from this source; the host's with `ix_tools=host`), and the terminfo folders of the
    system are searched for the others. Its archives are made without `ar`'s U (real
    times), which configure would choose: the same bytes at every build. -#}
{% extends '//die/c/configure.sh' %}
{% block version %}6.4{% endblock %}
{% block fetch %}
https://invisible-island.net/archive/ncurses/ncurses-6.4.tar.gz
sha:6931283d9ac87c5073f30b6290c4c75f21632bb4fc3603ac8100812bed248159
{% endblock %}
{% block bld_tool %}
{{ super() }}
{% if ix_tools == 'host' %}
bld/host/tic
{% else %}
bld/tic
{% endif %}
{% endblock %}
{% block configure_flags %}
{{ super() }}
--without-cxx
--without-cxx-binding
--without-ada
--without-manpages
{{ self.programs() }}
--without-tests
--without-shared
--with-normal
--without-debug
--without-profile
--disable-db-install
--disable-stripping
--without-pkg-config
--enable-overwrite
--with-default-terminfo-dir=/usr/share/terminfo
--with-terminfo-dirs=/etc/terminfo:/lib/terminfo:/usr/share/terminfo
cf_cv_ar_flags=-curv
{% endblock %}
{% block build %}
make -C include -j "$make_thrs"
make -C ncurses -j "$make_thrs"
{% endblock %}
{% block install %}
make -C include install
make -C ncurses install
{% endblock %}
{% block libs %}
-lncurses
{% endblock %}
{% block programs %}
--without-progs
--with-fallbacks={{ self.fallbacks() | parse_list | join(',') }}
{% endblock %}
{% block fallbacks %}
linux vt100 vt220 xterm xterm-256color screen screen-256color tmux tmux-256color dumb
{% endblock %}
