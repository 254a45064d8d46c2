{#- A build that prints numbered lines: `lines` of them (default 5000), the first `at`
    (default: all), a pause of `secs` seconds (default 0), the rest, then a pause of `after`
    seconds (default 0), so a follower can join before, while or after it prints. -#}
{% extends '//die/sh.sh' %}
{% block build %}
i=1
while [ "$i" -le {{ at | default(lines | default('5000')) }} ]; do
    echo "chatty line $i"
    i=$((i + 1))
done
sleep {{ secs | default('0') }}
while [ "$i" -le {{ lines | default('5000') }} ]; do
    echo "chatty line $i"
    i=$((i + 1))
done
sleep {{ after | default('0') }}
{% endblock %}
{% block install %}
mkdir -p "$out/bin"
printf '#!/bin/sh\necho chatty\n' > "$out/bin/chatty-{{ tag | default('x') }}"
chmod +x "$out/bin/chatty-{{ tag | default('x') }}"
{% endblock %}
