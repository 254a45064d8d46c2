{#- The host gcc as a C toolchain: the same as bld/host/cc (what `--cc=gcc` selects). -#}
{% extends '../cc/ix.sh' %}
