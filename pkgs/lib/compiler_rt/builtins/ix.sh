{#- compiler-rt's builtins: clang's runtime library (integer and floating-point helpers the
    compiler calls, in place of gcc's libgcc), and its crtbegin.o/crtend.o (in place of
    gcc's). Installed as clang's resource folder lays them out (lib/linux/...), which the
    clang toolchain points clang at (-resource-dir) through IX_BUILTINS, set by this env.

    The clang toolchain induces it into every package it builds; it is itself built with the
    bare toolchain (`libc=none`) against lib/c's headers.

    On ixd's default chain (`ix_tools=boot`) for x86_64 it is built without CMake, Ninja and
    Python, which ix does not build yet (and the host's would show the build the host's
    folders): the script compiles the files compiler-rt's CMakeLists.txt lists for the
    target (`builtins_sources`: the generic ones, the long double and x86 ones, and those of
    x86_64/ and i386/ in place of the generic files of the same name) with its flags, and
    lays them out as CMake's install does. -#}
{% extends '//lib/llvm/src.sh' %}
{% block c_compiler %}
{{ super() | strip }}(libc=none)
{% endblock %}
{% block bld_libs %}
lib/c
{% endblock %}
{% block patch %}
# clear_cache.c includes the kernel's linux/unistd.h for riscv's icache flush, the only kernel
# header the builtins need (musl carries none): musl's own syscall numbers stand in for it
mkdir -p "$tmp/kernel/linux"
echo '#include <sys/syscall.h>' > "$tmp/kernel/linux/unistd.h"
export CFLAGS="-isystem $tmp/kernel ${CFLAGS}"
{% endblock %}
{% block llvm_subdirs %}
{{ super() }}
compiler-rt
{% endblock %}
{% block cmake_srcdir %}
compiler-rt
{% endblock %}
{% block cmake_flags %}
{{ super() }}
CMAKE_C_COMPILER_TARGET={{ target.gnu_arch }}-unknown-linux-musl
CMAKE_ASM_COMPILER_TARGET={{ target.gnu_arch }}-unknown-linux-musl
COMPILER_RT_DEFAULT_TARGET_ONLY=ON
COMPILER_RT_INSTALL_PATH="$out"
LLVM_CONFIG_PATH=
COMPILER_RT_BUILD_BUILTINS=ON
COMPILER_RT_BUILD_CRT=ON
COMPILER_RT_BUILD_SANITIZERS=OFF
COMPILER_RT_BUILD_XRAY=OFF
COMPILER_RT_BUILD_LIBFUZZER=OFF
COMPILER_RT_BUILD_PROFILE=OFF
COMPILER_RT_BUILD_MEMPROF=OFF
COMPILER_RT_BUILD_ORC=OFF
COMPILER_RT_BUILD_GWP_ASAN=OFF
COMPILER_RT_INCLUDE_TESTS=OFF
{% endblock %}
{% block env %}
export IX_BUILTINS="$out"
{% endblock %}
{% block scripted %}
{% if ix_tools != 'host' and target.gnu_arch == 'x86_64' %}
yes
{% endif %}
{% endblock %}
{% block bld_tool %}
{% if self.scripted() | strip %}
{% for tool in super() | parse_list if tool not in ('bld/host/cmake', 'bld/host/ninja', 'bld/host/python') %}
{{ tool }}
{% endfor %}
{% else %}
{{ super() }}
{% endif %}
{% endblock %}
{% block configure %}
{% if self.scripted() | strip %}
lib="$out/lib/linux"
mkdir -p "$lib" "$tmp/obj"
{% else %}
{{ super() }}
{% endif %}
{% endblock %}
{% block build %}
{% if self.scripted() | strip %}
arch={{ target.gnu_arch }}
cd compiler-rt/lib/builtins
# compiler-rt's flags for the builtins (CMakeLists.txt: BUILTIN_CFLAGS, BUILTIN_DEFS)
for file in {{ self.builtins_sources() | fix_list }} {{ self.builtins_arch_sources() | fix_list }}; do
    $CC $CPPFLAGS $CFLAGS -std=c11 -fPIC -fno-builtin -fvisibility=hidden \
        -fomit-frame-pointer -DVISIBILITY_HIDDEN -c "$file" \
        -o "$tmp/obj/$(echo "${file%.*}" | tr / _).o"
done
$AR rc "$lib/libclang_rt.builtins-$arch.a" "$tmp"/obj/*.o
$RANLIB "$lib/libclang_rt.builtins-$arch.a"
# and crt's (lib/crt/CMakeLists.txt: CRT_CFLAGS)
cd ../crt
for part in crtbegin crtend; do
    $CC $CPPFLAGS $CFLAGS -std=c11 -DCRT_HAS_INITFINI_ARRAY -DEH_USE_FRAME_REGISTRY -fPIC \
        -Wno-pedantic -c "$part.c" -o "$lib/clang_rt.$part-$arch.o"
done
{% else %}
{{ super() }}
{% endif %}
{% endblock %}
{% block install %}
{% if not self.scripted() | strip %}
{{ super() }}
{% endif %}
{% endblock %}
{% if false %}
{% block builtins_sources %}
absvdi2.c absvsi2.c absvti2.c adddf3.c addsf3.c addtf3.c addvdi3.c addvsi3.c addvti3.c
apple_versioning.c ashldi3.c ashlti3.c ashrdi3.c ashrti3.c bswapdi2.c bswapsi2.c
clear_cache.c clzdi2.c clzsi2.c clzti2.c cmpdi2.c cmpti2.c comparedf2.c comparesf2.c
comparetf2.c cpu_model.c ctzdi2.c ctzsi2.c ctzti2.c divdc3.c divdf3.c divdi3.c divmoddi4.c
divmodsi4.c divmodti4.c divsc3.c divsf3.c divsi3.c divtc3.c divtf3.c divti3.c divxc3.c
emutls.c enable_execute_stack.c eprintf.c extenddftf2.c extendhfsf2.c extendhftf2.c
extendsfdf2.c extendsftf2.c ffsdi2.c ffssi2.c ffsti2.c fixdfdi.c fixdfsi.c fixdfti.c
fixsfdi.c fixsfsi.c fixsfti.c fixtfdi.c fixtfsi.c fixtfti.c fixunsdfdi.c fixunsdfsi.c
fixunsdfti.c fixunssfdi.c fixunssfsi.c fixunssfti.c fixunstfdi.c fixunstfsi.c fixunstfti.c
fixunsxfdi.c fixunsxfsi.c fixunsxfti.c fixxfdi.c fixxfti.c floatditf.c floatsidf.c
floatsisf.c floatsitf.c floattidf.c floattisf.c floattitf.c floattixf.c floatunditf.c
floatunsidf.c floatunsisf.c floatunsitf.c floatuntidf.c floatuntisf.c floatuntitf.c
floatuntixf.c gcc_personality_v0.c int_util.c lshrdi3.c lshrti3.c moddi3.c modsi3.c modti3.c
muldc3.c muldf3.c muldi3.c mulodi4.c mulosi4.c muloti4.c mulsc3.c mulsf3.c multc3.c multf3.c
multi3.c mulvdi3.c mulvsi3.c mulvti3.c mulxc3.c negdf2.c negdi2.c negsf2.c negti2.c
negvdi2.c negvsi2.c negvti2.c os_version_check.c paritydi2.c paritysi2.c parityti2.c
popcountdi2.c popcountsi2.c popcountti2.c powidf2.c powisf2.c powitf2.c powixf2.c subdf3.c
subsf3.c subtf3.c subvdi3.c subvsi3.c subvti3.c trampoline_setup.c truncdfhf2.c truncdfsf2.c
truncsfhf2.c trunctfdf2.c trunctfhf2.c trunctfsf2.c ucmpdi2.c ucmpti2.c udivdi3.c
udivmoddi4.c udivmodsi4.c udivmodti4.c udivsi3.c udivti3.c umoddi3.c umodsi3.c umodti3.c
{% endblock %}
{% block builtins_arch_sources %}
cpu_model.c i386/fp_mode.c x86_64/floatdidf.c x86_64/floatdisf.c x86_64/floatundidf.S
x86_64/floatundisf.S x86_64/floatdixf.c x86_64/floatundixf.S
{% endblock %}
{% endif %}
