{#- Stage 1's shell: dash, static; the /bin/sh of every build after stage 1 (the sandbox
    links /bin/sh to the first `sh` on a build's PATH). -#}
{% extends '../c.sh' %}
{% block version %}0.5.12{% endblock %}
{% block fetch %}
http://gondor.apana.org.au/~herbert/dash/files/dash-0.5.12.tar.gz
sha:6a474ac46e8b0b32916c4c60df694c82058d3297d8b385b74508030ca4a8f28a
{% endblock %}
{% block configure %}
./configure --prefix="$out" --disable-dependency-tracking
{% endblock %}
{% block install %}
mkdir -p "$out/bin"
cp src/dash "$out/bin/dash"
ln -s dash "$out/bin/sh"
{% endblock %}
