{#- A C package built with make: `make` then `make install PREFIX=$out`; extra make
    arguments (both steps) in `make_flags`. -#}
{% extends '//die/c/ix.sh' %}
{% block std_tools %}
{{ super() }}
{% if ix_tools == 'host' %}
bld/host/make
{% endif %}
{% endblock %}
{% block build %}
make -j "$make_thrs" {{ self.make_flags() | fix_list }}
{% endblock %}
{% block install %}
make install PREFIX="$out" {{ self.make_flags() | fix_list }}
{% endblock %}
{% if false %}
{% block make_flags %}{% endblock %}
{% endif %}
