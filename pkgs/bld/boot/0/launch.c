/* ix's launcher for a program captured from the host (pkgs/bld/boot/0, docs/recipes.md,
   "Stage 0"). A captured program is a dynamically linked ELF file of the host; the host's
   loader and libraries are captured beside it, but not at the paths the program names
   (/lib64/ld-linux-x86-64.so.2, /usr/lib/...), which a build's sandbox does not have.

   The capture puts this launcher where the program was, the program itself in `.ix-real/`
   beside it, a copy of the captured loader as `.ix-ld.so` and the captured library folders
   (one line, colon-separated) in `.ix-ld.path`. The launcher runs

       DIR/.ix-ld.so --inhibit-cache --library-path LIBS --argv0 ARGV0 DIR/.ix-real/NAME ARGS

   where DIR/NAME is the launcher's own file (/proc/self/exe, links resolved): the program
   gets the argv[0] it was called with (multi-call programs such as lld choose by it), and
   /proc/self/exe is the loader in the program's own folder, so a program that finds its
   files from its own location finds the captured ones.

   `.ix-real/NAME.args`, if present, holds arguments (one a line) put before the caller's,
   except when the first of those starts with `-cc1`: clang's driver runs its compiler as
   `CLANG -cc1 ...`, with CLANG its own path, which is the loader here (/proc/self/exe);
   with `-no-canonical-prefixes` in NAME.args the driver takes argv[0] as its path instead
   (this launcher), and its `-cc1` runs come back here, where they get no driver options.

   Freestanding (no C library: there is none to link yet), Linux system calls only. */

typedef unsigned long size_t;

#define PATH_MAX 4096

#if defined(__x86_64__)
#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_readlink 89
#define SYS_execve 59
#define SYS_exit 60

static long sys3(long n, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}

__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call ix_main\n"
        "  hlt\n");
#elif defined(__aarch64__)
#define SYS_read 63
#define SYS_write 64
#define SYS_openat 56
#define SYS_close 57
#define SYS_readlinkat 78
#define SYS_execve 221
#define SYS_exit 93

static long sys4(long n, long a, long b, long c, long d) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
}

static long sys3(long n, long a, long b, long c) { return sys4(n, a, b, c, 0); }

__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  mov x29, #0\n"
        "  mov x0, sp\n"
        "  bl ix_main\n"
        "  brk #0\n");
#else
#error "the launcher knows the system calls of x86_64 and aarch64 only"
#endif

static long sys_open(const char *path) {
#if defined(__x86_64__)
    return sys3(SYS_open, (long)path, 0 /* O_RDONLY */, 0);
#else
    return sys4(SYS_openat, -100 /* AT_FDCWD */, (long)path, 0, 0);
#endif
}

static long sys_readlink(const char *path, char *buf, size_t size) {
#if defined(__x86_64__)
    return sys3(SYS_readlink, (long)path, (long)buf, (long)size);
#else
    return sys4(SYS_readlinkat, -100, (long)path, (long)buf, (long)size);
#endif
}

static size_t length(const char *s) {
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static void say(const char *s) { sys3(SYS_write, 2, (long)s, (long)length(s)); }

static __attribute__((noreturn)) void fail(const char *what, const char *path) {
    say("ix launcher: ");
    say(what);
    say(" ");
    say(path);
    say("\n");
    sys3(SYS_exit, 127, 0, 0);
    for (;;) {
    }
}

/* dst = a + b, within PATH_MAX */
static void join(char *dst, const char *a, const char *b) {
    size_t i = 0;
    for (; *a; a++) {
        if (i + 1 >= PATH_MAX)
            fail("path too long:", dst);
        dst[i++] = *a;
    }
    for (; *b; b++) {
        if (i + 1 >= PATH_MAX)
            fail("path too long:", dst);
        dst[i++] = *b;
    }
    dst[i] = 0;
}

/* The whole of `path` into buf (at most PATH_MAX - 1 bytes, then a 0): its length, or 0
   when it does not exist and `needed` is 0. */
static long slurp(const char *path, char *buf, int needed) {
    long fd = sys_open(path);
    if (fd < 0) {
        if (needed)
            fail("cannot open", path);
        return 0;
    }
    long got = 0, r;
    while (got < PATH_MAX - 1 && (r = sys3(SYS_read, fd, (long)(buf + got), PATH_MAX - 1 - got)) > 0)
        got += r;
    sys3(SYS_close, fd, 0, 0);
    if (r < 0 || got >= PATH_MAX - 1)
        fail("cannot read (or too long):", path);
    buf[got] = 0;
    return got;
}

__attribute__((used)) void ix_main(long *stack) {
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    char **envp = argv + argc + 1;

    static char self[PATH_MAX], dir[PATH_MAX], name[PATH_MAX];
    static char loader[PATH_MAX], real[PATH_MAX], libpath_file[PATH_MAX], libpath[PATH_MAX];
    static char args_file[PATH_MAX], extra[PATH_MAX];

    long n = sys_readlink("/proc/self/exe", self, PATH_MAX - 1);
    if (n <= 0)
        fail("cannot read", "/proc/self/exe (is /proc mounted?)");
    self[n] = 0;
    long slash = n - 1;
    while (slash > 0 && self[slash] != '/')
        slash--;
    for (long i = 0; i < slash; i++)
        dir[i] = self[i];
    dir[slash] = 0;
    join(name, self + slash + 1, "");

    join(loader, dir, "/.ix-ld.so");
    join(real, dir, "/.ix-real/");
    join(real, real, name);
    join(libpath_file, dir, "/.ix-ld.path");

    long got = slurp(libpath_file, libpath, 1);
    while (got > 0 && (libpath[got - 1] == '\n' || libpath[got - 1] == ' '))
        libpath[--got] = 0;

    /* the extra arguments: lines of NAME.args, unless this is a -cc1 run */
    join(args_file, real, ".args");
    long extra_size = 0, extras = 0;
    if (!(argc > 1 && argv[1][0] == '-' && argv[1][1] == 'c' && argv[1][2] == 'c' &&
          argv[1][3] == '1'))
        extra_size = slurp(args_file, extra, 0);
    for (long i = 0; i < extra_size; i++)
        if (extra[i] == '\n') {
            extra[i] = 0;
            extras++;
        }
    if (extra_size > 0 && extra[extra_size - 1] != 0)
        extras++;

    /* loader, 5 options, the program, the extra arguments, argv[1..], NULL */
    char *args[argc + extras + 8];
    long k = 0;
    args[k++] = loader;
    args[k++] = "--inhibit-cache";
    args[k++] = "--library-path";
    args[k++] = libpath;
    args[k++] = "--argv0";
    args[k++] = argc > 0 ? argv[0] : name;
    args[k++] = real;
    for (long i = 0; i < extra_size; i += length(extra + i) + 1)
        args[k++] = extra + i;
    for (long i = 1; i < argc; i++)
        args[k++] = argv[i];
    args[k] = 0;
    sys3(SYS_execve, (long)loader, (long)args, (long)envp);
    fail("cannot run", loader);
}
