/* The pod sandbox process of the local node (what registry.k8s.io/pause does): hold the pod's
 * namespaces as PID 1, reap orphaned children, exit cleanly on SIGINT/SIGTERM.
 * Built static by hack/mlstack_local/images.py:  gcc -static -O2 -s -o pause pause.c */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
  psignal(sig, "pause: shutting down on");
  exit(0);
}

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop = {.sa_handler = on_stop};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  if (getpid() != 1) fprintf(stderr, "pause: warning: not running as PID 1\n");
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0) return 1;
  if (sigaction(SIGCHLD, &child, NULL) < 0) return 2;
  for (;;) pause();
}
