{#- A build that takes a while: `secs` seconds (default 1), then writes bin/slow-TAG.
    Different tags are different packages; the same tag from two users is one build. -#}
{% extends '//die/sh.sh' %}
{% block build %}
echo "slow build {{ tag | default('x') }} starts"
sleep {{ secs | default('1') }}
{% endblock %}
{% block install %}
mkdir -p "$out/bin"
printf '#!/bin/sh\necho slow-%s\n' '{{ tag | default('x') }}' > "$out/bin/slow-{{ tag | default('x') }}"
chmod +x "$out/bin/slow-{{ tag | default('x') }}"
{% endblock %}
