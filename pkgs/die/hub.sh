{#- A hub builds nothing: it names packages (run_deps) that come along with it. -#}
{% extends '//die/base.json' %}
