/* Secrets and the files that hold them: systemd credentials ("cred:NAME"),
 * mode-checked one-line secret files, and the password prompt with echo
 * off. See app_secret.h. */
#include "app_secret.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "app_common.h"

/* ---- systemd credentials ------------------------------------------------ */

/* As systemd's credential_name_valid(): a file name (no '/', not "." or
 * "..") of printable ASCII without ':', at most 255 bytes. */
static int credential_name_ok(const char *name) {
  size_t len = strlen(name);
  if (len == 0 || len > 255 || strcmp(name, ".") == 0 ||
      strcmp(name, "..") == 0)
    return 0;
  for (const char *p = name; *p; p++)
    if (*p == '/' || *p == ':' || *p < 0x20 || *p > 0x7e)
      return 0;
  return 1;
}

int app_file_path(const char *value, char *out, size_t n, char *err,
                  size_t errlen) {
  size_t plen = strlen(APP_CRED_PREFIX);
  int len;
  if (strncmp(value, APP_CRED_PREFIX, plen) != 0) {
    len = snprintf(out, n, "%s", value);
  } else {
    const char *name = value + plen;
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (!credential_name_ok(name)) {
      snprintf(err, errlen,
               "%.300s: not a credential name (want cred:NAME, NAME a file "
               "name without '/' or ':')",
               value);
      return -1;
    }
    if (dir == NULL || dir[0] != '/') {
      snprintf(err, errlen,
               "%.300s: $CREDENTIALS_DIRECTORY is %s (systemd sets it for a "
               "unit with LoadCredential=)",
               value, dir == NULL ? "not set" : "not an absolute path");
      return -1;
    }
    len = snprintf(out, n, "%s/%s", dir, name);
  }
  if (len < 0 || (size_t)len >= n) {
    snprintf(err, errlen, "%.300s: path too long", value);
    return -1;
  }
  return 0;
}

void app_file_flag(const char *prog, const char *flag, const char **value,
                   char *buf, size_t n) {
  char err[PATH_MAX + 256];
  if (*value == NULL)
    return;
  if (app_file_path(*value, buf, n, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s: flag -%s: %s\n", prog, flag, err);
    exit(APP_EXIT_USAGE);
  }
  *value = buf;
}

int app_is_credential(const char *path) {
  const char *dir = getenv("CREDENTIALS_DIRECTORY");
  struct stat file, parent, creds;
  if (dir == NULL || *dir == '\0')
    return 0;
  /* a symbolic link could point anywhere: only the file systemd wrote */
  if (lstat(path, &file) != 0 || !S_ISREG(file.st_mode))
    return 0;
  char up[PATH_MAX];
  const char *slash = strrchr(path, '/');
  if (slash == NULL)
    snprintf(up, sizeof(up), ".");
  else if (slash == path)
    snprintf(up, sizeof(up), "/");
  else if ((size_t)(slash - path) < sizeof(up))
    snprintf(up, sizeof(up), "%.*s", (int)(slash - path), path);
  else
    return 0;
  /* the same directory, however either path spells it */
  return stat(up, &parent) == 0 && stat(dir, &creds) == 0 &&
         parent.st_dev == creds.st_dev && parent.st_ino == creds.st_ino;
}

/* ---- secret files ------------------------------------------------------- */

/* /dev/null stands for an empty file (`-config /dev/null`: no file) */
static int is_dev_null(const struct stat *st) {
  struct stat null;
  return S_ISCHR(st->st_mode) && stat("/dev/null", &null) == 0 &&
         st->st_rdev == null.st_rdev;
}

FILE *app_open_regular(const char *path, struct stat *st, char *err,
                       size_t errlen) {
  /* O_NONBLOCK: opening a FIFO for reading waits for a writer, and a
   * reload runs on the event loop; on a regular file it changes nothing */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 || fstat(fd, st) != 0) {
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return NULL;
  }
  if (!S_ISREG(st->st_mode) && !is_dev_null(st)) {
    snprintf(err, errlen, "%s is not a regular file", path);
    close(fd);
    return NULL;
  }
  FILE *f = fdopen(fd, "r");
  if (f == NULL) {
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    close(fd);
  }
  return f;
}

int app_secret_read(const char *value, char *out, size_t n, char *err,
                    size_t errlen) {
  char path[PATH_MAX];
  if (app_file_path(value, path, sizeof(path), err, errlen) != 0)
    return -1;
  struct stat st;
  FILE *f = app_open_regular(path, &st, err, errlen);
  if (f == NULL)
    return -1;
  /* as ssh does with keys: a secret others can read is no secret. A
   * credential may be 0440: the group bits then show the ACL systemd adds
   * for the service's user on a file root keeps. */
  int credential = app_is_credential(path);
  if (st.st_mode & (credential ? 037 : 077)) {
    fclose(f);
    if (credential)
      snprintf(err, errlen,
               "%s is readable by others or writable by group (mode %03o; "
               "systemd makes credentials 0400 or 0440)",
               path, (unsigned)(st.st_mode & 0777));
    else
      snprintf(err, errlen,
               "%s is readable by others (mode %03o; chmod 600 it)", path,
               (unsigned)(st.st_mode & 0777));
    return -1;
  }
  size_t len = fread(out, 1, n - 1, f);
  /* what does not fit is refused, never cut: a cut password list would
   * leave its last password a prefix of the real one. Trailing blanks
   * past the buffer are what the trimming below drops anyway. */
  int c, more = 0;
  while (!more && (c = fgetc(f)) != EOF)
    more = c != '\n' && c != '\r' && c != ' ' && c != '\t';
  fclose(f);
  out[len] = '\0';
  if (more) {
    memset(out, 0, n);
    snprintf(err, errlen, "%s is longer than %zu bytes", path, n - 1);
    return -1;
  }
  while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r' ||
                     out[len - 1] == ' ' || out[len - 1] == '\t'))
    out[--len] = '\0';
  if (len == 0) {
    snprintf(err, errlen, "%s is empty", path);
    return -1;
  }
  return 0;
}

void app_read_secret_file(const char *prog, const char *flag, const char *value,
                          char *out, size_t n) {
  char err[PATH_MAX + 256];
  if (app_secret_read(value, out, n, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s: flag -%s: %s\n", prog, flag, err);
    exit(APP_EXIT_USAGE);
  }
}

/* ---- the prompt --------------------------------------------------------- */

static volatile sig_atomic_t prompt_signal;

static void on_prompt_signal(int sig) {
  prompt_signal = sig;
}

/* The signals that would end or stop the process at the prompt, leaving
 * the terminal without echo if nothing restored it. */
static const int prompt_signals[] = {SIGINT,  SIGTERM, SIGHUP, SIGQUIT,
                                     SIGTSTP, SIGTTIN, SIGTTOU};
enum { NPROMPT_SIGNALS = sizeof(prompt_signals) / sizeof(prompt_signals[0]) };

static void write_str(int fd, const char *s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    s += w;
    n -= (size_t)w;
  }
}

/* One attempt, with the prompt signals blocked but while waiting for
 * input (`waiting`: the mask to wait with), so that none falls between a
 * check and the wait. 1 a line was read, 0 the input ended, -1 a read
 * error, -2 the line was too long; prompt_signal says if a signal came. */
static int read_line_quietly(int tty_out, const char *prompt,
                             const sigset_t *waiting, char *out, size_t n,
                             size_t *lenp, int *errp) {
  struct termios saved, quiet;
  int changed = 0;
  if (tcgetattr(STDIN_FILENO, &saved) == 0) {
    quiet = saved;
    /* no echo, but the newline that ends the line (ECHONL) */
    quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
    quiet.c_lflag |= ECHONL;
    changed = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
  }
  int result = -1;
  size_t len = 0;
  int too_long = 0;
  write_str(tty_out, prompt); /* echo is off once this shows */
  while (!prompt_signal) {
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    if (ppoll(&p, 1, NULL, waiting) < 0) {
      if (errno == EINTR)
        continue; /* a prompt signal ends the loop; others do not */
      *errp = errno;
      break;
    }
    char c;
    ssize_t r = read(STDIN_FILENO, &c, 1);
    if (r == 1 && c == '\n') {
      result = too_long ? -2 : 1;
      break;
    }
    if (r == 1) {
      if (len + 1 < n)
        out[len++] = c;
      else
        too_long = 1;
    } else if (r == 0) {
      result = 0;
      break;
    } else if (errno != EINTR && errno != EAGAIN) {
      *errp = errno;
      break;
    }
  }
  if (changed) /* signals blocked: no SIGTTOU even in the background */
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  if (result != 1)
    write_str(tty_out, "\n"); /* ECHONL wrote none */
  *lenp = len;
  return result;
}

int app_secret_prompt(const char *prompt, char *out, size_t n, char *err,
                      size_t errlen) {
  if (!isatty(STDIN_FILENO)) {
    snprintf(err, errlen, "standard input is not a terminal");
    return -1;
  }
  /* the prompt goes to the terminal stdin is, even if stderr is a log */
  const char *name = ttyname(STDIN_FILENO);
  int tty_out = name ? open(name, O_WRONLY | O_NOCTTY | O_CLOEXEC) : -1;
  int fd = tty_out >= 0 ? tty_out : STDERR_FILENO;
  int rc;
  for (;;) {
    struct sigaction catch_it, old[NPROMPT_SIGNALS];
    memset(&catch_it, 0, sizeof(catch_it));
    catch_it.sa_handler = on_prompt_signal;
    sigemptyset(&catch_it.sa_mask);
    sigset_t blocked, waiting;
    sigemptyset(&blocked);
    prompt_signal = 0;
    for (int i = 0; i < NPROMPT_SIGNALS; i++) {
      sigaction(prompt_signals[i], NULL, &old[i]);
      if (old[i].sa_handler == SIG_IGN)
        continue; /* an ignored one stays ignored */
      sigaction(prompt_signals[i], &catch_it, NULL);
      sigaddset(&blocked, prompt_signals[i]);
    }
    sigprocmask(SIG_BLOCK, &blocked, &waiting);
    sigset_t saved_mask = waiting;
    for (int i = 0; i < NPROMPT_SIGNALS; i++)
      sigdelset(&waiting, prompt_signals[i]);
    size_t len = 0;
    int read_errno = 0;
    int got =
        read_line_quietly(fd, prompt, &waiting, out, n, &len, &read_errno);
    for (int i = 0; i < NPROMPT_SIGNALS; i++)
      sigaction(prompt_signals[i], &old[i], NULL);
    sigprocmask(SIG_SETMASK, &saved_mask, NULL);
    int sig = prompt_signal;
    if (sig) {
      memset(out, 0, len);
      raise(sig); /* the terminal is back: end or stop as it would have */
      if (sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
        continue; /* resumed: ask again */
      snprintf(err, errlen, "interrupted by signal %d", sig);
      rc = -1;
      break;
    }
    if (got == 1 && len > 0 && out[len - 1] == '\r')
      len--;
    out[len] = '\0';
    rc = got == 1 && len > 0 ? 0 : -1;
    if (got == 1 && len == 0)
      snprintf(err, errlen, "no password entered");
    else if (got == 0)
      snprintf(err, errlen, "no password entered (end of input)");
    else if (got == -2)
      snprintf(err, errlen, "password longer than %zu bytes", n - 1);
    else if (got < 0)
      snprintf(err, errlen, "cannot read the terminal: %s",
               strerror(read_errno));
    if (rc != 0)
      memset(out, 0, n);
    break;
  }
  if (tty_out >= 0)
    close(tty_out);
  return rc;
}
