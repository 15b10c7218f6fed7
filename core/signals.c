/* Signals for the command-line program: see signals.h. Everything a
 * handler calls is async-signal-safe (open, read, write, unlink, raise,
 * _exit, and string scans of its own buffers). */
#include "config.h"

#include "signals.h"

#include "ctx.h"
#include "driver.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t polling;

/* The signals that stop a command, with the names its message gives. */
static const struct {
    int sig;
    const char *name;
} stops[] = {{SIGINT, "SIGINT"},   {SIGTERM, "SIGTERM"}, {SIGHUP, "SIGHUP"},
             {SIGQUIT, "SIGQUIT"}, {SIGPIPE, "SIGPIPE"}, {SIGUSR1, "SIGUSR1"},
             {SIGUSR2, "SIGUSR2"}, {SIGALRM, "SIGALRM"}};
#define N_STOPS (sizeof stops / sizeof *stops)

static void on_stop(int sig)
{
    if (polling && !hvq_interrupted) {
        hvq_interrupted = sig;
        return;
    }
    hvq_outputs_unlink_temporaries();
    signal(sig, SIG_DFL);
    raise(sig); /* delivered when the handler returns */
}

static void put(const char *s) { (void)!write(2, s, strlen(s)); }

static uintptr_t hex(const char **p)
{
    uintptr_t v = 0;
    for (;; (*p)++) {
        char c = **p;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return v;
        v = v * 16 + (uintptr_t)d;
    }
}

/* Whether the /proc/self/maps line maps addr from a file; its path into out. */
static int line_maps(const char *line, uintptr_t addr, char *out, size_t cap)
{
    const char *p = line;
    uintptr_t lo = hex(&p);
    if (*p++ != '-')
        return 0;
    uintptr_t hi = hex(&p);
    const char *path = strchr(p, '/');
    if (addr < lo || addr >= hi || !path)
        return 0;
    size_t n = strlen(path);
    n = n < cap - 1 ? n : cap - 1;
    memcpy(out, path, n);
    out[n] = '\0';
    return 1;
}

/* The file mapped at addr (from /proc/self/maps), into out. */
static int mapped_file(const void *addr, char *out, size_t cap)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    static char buf[4096], line[PATH_MAX + 256];
    size_t ll = 0;
    int found = 0;
    ssize_t n;
    while (!found && (n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n && !found; i++) {
            if (buf[i] != '\n') {
                if (ll < sizeof line - 1)
                    line[ll++] = buf[i];
                continue;
            }
            line[ll] = '\0';
            ll = 0;
            found = line_maps(line, (uintptr_t)addr, out, cap);
        }
    close(fd);
    return found;
}

static void on_bus(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    static char path[PATH_MAX];
    int known = si && mapped_file(si->si_addr, path, sizeof path);
    if (isatty(2))
        put("\r\033[K");
    put("hvqconv: error: ");
    put(known ? path : "an input file");
    put(": the file shrank while it was read (SIGBUS: is it still being copied or "
        "downloaded?); nothing was written\n");
    hvq_outputs_unlink_temporaries();
    _exit(2);
}

void hvq_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    for (size_t i = 0; i < N_STOPS; i++)
        sigaction(stops[i].sig, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGXFSZ, &sa, NULL);
    sa.sa_handler = NULL;
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &sa, NULL);
}

void hvq_signals_polling(int on) { polling = on; }

int hvq_signals_exit(int rc)
{
    int sig = hvq_interrupted;
    return rc != 0 && sig > 0 && sig < 64 ? 128 + sig : rc;
}

hvq_status hvq_interrupt_error(hvq_ctx *ctx)
{
    const char *name = "a signal";
    for (size_t i = 0; i < N_STOPS; i++)
        if (stops[i].sig == hvq_interrupted)
            name = stops[i].name;
    return hvq_error(ctx, HVQ_E_IO, "interrupted (%s); no output was written", name);
}
