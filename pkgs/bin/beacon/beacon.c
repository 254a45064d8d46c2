/* beacon: a tiny Unix-socket daemon for runit.
 *
 *   beacon [-n NAME] SOCKET
 *
 * Listens on SOCKET (a path; a stale socket left by a killed beacon is replaced) and
 * answers every client with one line, "beacon NAME pid PID up SECONDS served N", then
 * closes the connection. Logs one line per event to stdout (runsv hands it to svlogd).
 * Stops cleanly on TERM or INT: removes its socket, says so, exits 0. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal;

static void on_stop(int signum) {
    stop_signal = signum;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int usage(void) {
    fprintf(stderr, "usage: beacon [-n NAME] SOCKET\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *name = "beacon";
    int opt;
    while ((opt = getopt(argc, argv, "n:")) != -1) {
        if (opt == 'n') name = optarg;
        else return usage();
    }
    if (optind != argc - 1) return usage();
    const char *path = argv[optind];

    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "beacon: socket path too long: %s\n", path);
        return 1;
    }
    strcpy(addr.sun_path, path);

    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;  /* no SA_RESTART: accept() returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("beacon: socket");
        return 1;
    }
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 16) < 0) {
        fprintf(stderr, "beacon: cannot listen on %s: %s\n", path, strerror(errno));
        return 1;
    }
    double started = now();
    unsigned long served = 0;
    printf("beacon %s: pid %ld listening on %s\n", name, (long)getpid(), path);

    while (!stop_signal) {
        int client = accept(fd, NULL, NULL);
        if (client < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            fprintf(stderr, "beacon: accept: %s\n", strerror(errno));
            break;
        }
        served++;
        char line[256];
        int n = snprintf(line, sizeof line, "beacon %s pid %ld up %.0f served %lu\n", name,
                         (long)getpid(), now() - started, served);
        if (write(client, line, (size_t)n) != n)
            fprintf(stderr, "beacon: a client went away: %s\n", strerror(errno));
        close(client);
        printf("beacon %s: served client %lu\n", name, served);
    }
    close(fd);
    unlink(path);
    printf("beacon %s: stopping on signal %d after %lu clients\n", name, (int)stop_signal,
           served);
    return stop_signal ? 0 : 1;
}
