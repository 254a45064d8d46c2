{#- ncurses' terminfo compiler and dumper (tic, infocmp), static, from lib/ncurses' source:
    what lib/ncurses compiles its fallback terminals with. -#}
{% extends '//lib/ncurses/ix.sh' %}
{% block bld_tool %}
{{ self.std_tools() }}
{% endblock %}
{% block programs %}
--with-progs
--without-fallbacks
{% endblock %}
{% block build %}
make -C include -j "$make_thrs"
make -C ncurses -j "$make_thrs"
make -C progs -j "$make_thrs" tic infocmp
{% endblock %}
{% block install %}
mkdir -p "$out/bin"
cp progs/tic progs/infocmp "$out/bin/"
{% endblock %}
