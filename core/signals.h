/* Signals for the command-line program: a run stopped by a signal leaves
 * nothing behind and exits 128+signal; an input that shrinks under a
 * mapped read (SIGBUS) is reported by name with exit 2. */
#ifndef HVQ_CORE_SIGNALS_H
#define HVQ_CORE_SIGNALS_H

/* Installs the handlers for the whole process. SIGINT, SIGTERM, SIGHUP,
 * SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2 and SIGALRM: while a command polls
 * (hvq_signals_polling(1): run, compare, decode), the first sets
 * hvq_interrupted to the signal's number and the command stops at its next
 * check; otherwise, and on a second signal, the outputs' hidden
 * temporaries are removed and the signal takes its default action.
 * SIGXFSZ (a file-size limit) is ignored, so the write fails with an
 * error instead of killing the process. SIGBUS names the mapped file it
 * came from, removes the temporaries and exits 2. */
void hvq_signals_install(void);
void hvq_signals_polling(int on);

/* The exit status for a command that returned rc: 128 + the signal when a
 * signal stopped it, else rc. */
int hvq_signals_exit(int rc);

#endif
