{#- The host's binutils: assembler, linker, archiver and the object tools. -#}
{% extends '../tool.sh' %}
{% block host_tools %}
as ld ar ranlib nm strip objcopy objdump readelf size strings
{% endblock %}
