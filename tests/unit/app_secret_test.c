/* apps/app_secret.c: cred:NAME paths, the modes a secret file may have
 * inside and outside $CREDENTIALS_DIRECTORY, and the password prompt on a
 * real pseudo-terminal (a child process at the prompt, this one typing on
 * the master side): nothing typed is echoed, the terminal gets its echo
 * back on every way out, SIGINT ends the child with the terminal restored,
 * SIGTSTP stops it restored and SIGCONT asks again. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "app_secret.h"
#include "test.h"

static char creds[64], other[64]; /* a credentials directory, elsewhere */

static void make_dirs(void) {
  snprintf(creds, sizeof(creds), "/tmp/app_secret_test.XXXXXX");
  snprintf(other, sizeof(other), "/tmp/app_secret_test.XXXXXX");
  CHECK(mkdtemp(creds) != NULL);
  CHECK(mkdtemp(other) != NULL);
  setenv("CREDENTIALS_DIRECTORY", creds, 1);
}

static void write_file(const char *dir, const char *name, const char *text,
                       mode_t mode) {
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (f) {
    fputs(text, f);
    fclose(f);
  }
  chmod(path, mode);
}

static void remove_dirs(void) {
  char cmd[200];
  snprintf(cmd, sizeof(cmd), "rm -rf %s %s", creds, other);
  CHECK_EQ_INT(system(cmd), 0);
  unsetenv("CREDENTIALS_DIRECTORY");
}

TEST(cred_names_a_file_of_the_credentials_directory) {
  char out[PATH_MAX], err[512];
  unsetenv("CREDENTIALS_DIRECTORY");
  CHECK_EQ_INT(app_file_path("/etc/x", out, sizeof(out), err, sizeof(err)), 0);
  CHECK_EQ_STR(out, "/etc/x");
  CHECK_EQ_INT(app_file_path("rel/cred:x", out, sizeof(out), err, sizeof(err)),
               0);
  CHECK_EQ_STR(out, "rel/cred:x");
  CHECK_EQ_INT(app_file_path("cred:key", out, sizeof(out), err, sizeof(err)),
               -1);
  CHECK_EQ_STR(err, "cred:key: $CREDENTIALS_DIRECTORY is not set (systemd "
                    "sets it for a unit with LoadCredential=)");
  setenv("CREDENTIALS_DIRECTORY", "run/creds", 1);
  CHECK_EQ_INT(app_file_path("cred:key", out, sizeof(out), err, sizeof(err)),
               -1);
  CHECK_EQ_STR(err, "cred:key: $CREDENTIALS_DIRECTORY is not an absolute path "
                    "(systemd sets it for a unit with LoadCredential=)");
  setenv("CREDENTIALS_DIRECTORY", "/run/credentials/wstunsrv.service", 1);
  CHECK_EQ_INT(
      app_file_path("cred:tls-key", out, sizeof(out), err, sizeof(err)), 0);
  CHECK_EQ_STR(out, "/run/credentials/wstunsrv.service/tls-key");
  const char *bad[] = {"cred:",     "cred:.",   "cred:..", "cred:a/b",
                       "cred:../x", "cred:a:b", "cred:\t", "cred:\xc3\xa9"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    test_context("%s", bad[i]);
    CHECK_EQ_INT(app_file_path(bad[i], out, sizeof(out), err, sizeof(err)), -1);
    CHECK(strstr(err, "not a credential name") != NULL);
  }
  test_context(NULL);
  char small[8];
  CHECK_EQ_INT(app_file_path("cred:k", small, sizeof(small), err, sizeof(err)),
               -1);
  CHECK_EQ_STR(err, "cred:k: path too long");
  unsetenv("CREDENTIALS_DIRECTORY");
}

static int read_ok(const char *value, const char *want) {
  char out[64], err[PATH_MAX + 256];
  int rc = app_secret_read(value, out, sizeof(out), err, sizeof(err));
  if (rc == 0)
    CHECK_EQ_STR(out, want);
  return rc;
}

static const char *read_err(const char *value) {
  static char err[PATH_MAX + 256];
  char out[64];
  err[0] = '\0';
  CHECK_EQ_INT(app_secret_read(value, out, sizeof(out), err, sizeof(err)), -1);
  return err;
}

/* systemd writes credentials 0400 (chowned to the service's user) or 0440
 * (root's, with an ACL for the service's user): both are fine there, and
 * nowhere else. */
TEST(modes_inside_and_outside_the_credentials_directory) {
  make_dirs();
  struct {
    mode_t mode;
    int in_creds, outside;
  } cases[] = {
      {0400, 0, 0},   {0600, 0, 0},   {0440, 0, -1},  {0640, 0, -1},
      {0444, -1, -1}, {0460, -1, -1}, {0420, -1, -1}, {0404, -1, -1},
      {0402, -1, -1}, {0644, -1, -1}, {0666, -1, -1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char name[32], value[PATH_MAX];
    snprintf(name, sizeof(name), "pw%03o", (unsigned)cases[i].mode);
    write_file(creds, name, "s3cret\n", cases[i].mode);
    write_file(other, name, "s3cret\n", cases[i].mode);
    test_context("mode %03o as cred:%s", (unsigned)cases[i].mode, name);
    snprintf(value, sizeof(value), "cred:%s", name);
    CHECK_EQ_INT(read_ok(value, "s3cret"), cases[i].in_creds);
    test_context("mode %03o by its path in the credentials directory",
                 (unsigned)cases[i].mode);
    snprintf(value, sizeof(value), "%s/./%s", creds, name);
    CHECK_EQ_INT(read_ok(value, "s3cret"), cases[i].in_creds);
    test_context("mode %03o elsewhere", (unsigned)cases[i].mode);
    snprintf(value, sizeof(value), "%s/%s", other, name);
    CHECK_EQ_INT(read_ok(value, "s3cret"), cases[i].outside);
  }
  test_context(NULL);
  char value[PATH_MAX], want[PATH_MAX + 256];
  snprintf(value, sizeof(value), "%s/pw444", creds);
  snprintf(want, sizeof(want),
           "%s is readable by others or writable by group (mode 444; systemd "
           "makes credentials 0400 or 0440)",
           value);
  CHECK_EQ_STR(read_err("cred:pw444"), want);
  snprintf(value, sizeof(value), "%s/pw440", other);
  snprintf(want, sizeof(want),
           "%s is readable by others (mode 440; chmod 600 it)", value);
  CHECK_EQ_STR(read_err(value), want);
  /* a link in the credentials directory is not what systemd wrote */
  char link[PATH_MAX];
  snprintf(link, sizeof(link), "%s/link", creds);
  CHECK_EQ_INT(symlink(value, link), 0);
  CHECK(strstr(read_err("cred:link"), "is readable by others (mode 440;") !=
        NULL);
  snprintf(want, sizeof(want),
           "cannot read %s/absent: No such file or "
           "directory",
           creds);
  CHECK_EQ_STR(read_err("cred:absent"), want);
  write_file(creds, "empty", " \n", 0400);
  snprintf(want, sizeof(want), "%s/empty is empty", creds);
  CHECK_EQ_STR(read_err("cred:empty"), want);
  remove_dirs();
}

/* A secret longer than the buffer is refused, never cut: a cut
 * -passwords-file (over 64 KiB with many tokens) would silently make the
 * last token's password a prefix of the real one. */
TEST(secret_too_long_is_refused_not_cut) {
  make_dirs();
  write_file(other, "long", "tok0123456789abc:password\n", 0600);
  char value[PATH_MAX], out[16], err[PATH_MAX + 256];
  snprintf(value, sizeof(value), "%s/long", other);
  CHECK_EQ_INT(app_secret_read(value, out, sizeof(out), err, sizeof(err)), -1);
  CHECK(strstr(err, "longer than 15 bytes") != NULL);
  /* exactly the buffer, trailing newline beyond it: fine */
  write_file(other, "fits", "0123456789abcde\n", 0600);
  snprintf(value, sizeof(value), "%s/fits", other);
  CHECK_EQ_INT(app_secret_read(value, out, sizeof(out), err, sizeof(err)), 0);
  CHECK_EQ_STR(out, "0123456789abcde");
  remove_dirs();
}

TEST(is_credential) {
  make_dirs();
  write_file(creds, "a", "x", 0400);
  write_file(other, "a", "x", 0400);
  char p[PATH_MAX];
  snprintf(p, sizeof(p), "%s/a", creds);
  CHECK_EQ_INT(app_is_credential(p), 1);
  snprintf(p, sizeof(p), "%s//a", creds);
  CHECK_EQ_INT(app_is_credential(p), 1);
  snprintf(p, sizeof(p), "%s/a", other);
  CHECK_EQ_INT(app_is_credential(p), 0);
  snprintf(p, sizeof(p), "%s/missing", creds);
  CHECK_EQ_INT(app_is_credential(p), 0);
  CHECK_EQ_INT(app_is_credential(creds), 0); /* a directory */
  char cwd[PATH_MAX];
  CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
  CHECK_EQ_INT(chdir(creds), 0);
  CHECK_EQ_INT(app_is_credential("a"), 1); /* relative, in "." */
  CHECK_EQ_INT(chdir(cwd), 0);
  unsetenv("CREDENTIALS_DIRECTORY");
  snprintf(p, sizeof(p), "%s/a", creds);
  CHECK_EQ_INT(app_is_credential(p), 0);
  remove_dirs();
}

TEST(prompt_needs_a_terminal) {
  int saved = dup(STDIN_FILENO);
  int null = open("/dev/null", O_RDONLY);
  CHECK(saved >= 0 && null >= 0);
  dup2(null, STDIN_FILENO);
  char out[32], err[128];
  CHECK_EQ_INT(app_secret_prompt("pw: ", out, sizeof(out), err, sizeof(err)),
               -1);
  CHECK_EQ_STR(err, "standard input is not a terminal");
  dup2(saved, STDIN_FILENO);
  close(saved);
  close(null);
}

/* ---- on a pseudo-terminal ---------------------------------------------- */

typedef struct pty_child {
  int master, slave; /* slave: kept here to look at the terminal's modes */
  int result;        /* pipe: what the prompting process read */
  pid_t shell;       /* our child, the session leader */
  pid_t pid;         /* its child, at the prompt */
  char seen[4096];   /* everything the terminal showed */
  size_t nseen;
} pty_child;

/* The process at the prompt, in the foreground process group of the
 * terminal that is its stdin: app_secret_prompt("Password: "), then
 * "rc|value|err" to `out`. */
static void prompting_process(int out) {
  setpgid(0, 0);
  signal(SIGTTOU, SIG_IGN); /* to take the foreground, as shells do */
  tcsetpgrp(STDIN_FILENO, getpgrp());
  signal(SIGTTOU, SIG_DFL);
  char value[64], err[128], line[256];
  int rc =
      app_secret_prompt("Password: ", value, sizeof(value), err, sizeof(err));
  int n = snprintf(line, sizeof(line), "%d|%s|%s", rc, rc == 0 ? value : "",
                   rc == 0 ? "" : err);
  _exit(write(out, line, (size_t)n) == n ? 0 : 3);
}

/* A new pty and a session on it, as a login shell has: our child leads
 * the session and waits, like a shell, for its child at the prompt, in
 * its own process group (not orphaned, so SIGTSTP stops it). The shell
 * exits with the prompting process's status (128 + N for signal N). */
static int pty_start(pty_child *c) {
  memset(c, 0, sizeof(*c));
  c->master = posix_openpt(O_RDWR | O_NOCTTY);
  if (c->master < 0 || grantpt(c->master) != 0 || unlockpt(c->master) != 0)
    return -1;
  const char *name = ptsname(c->master);
  c->slave = name ? open(name, O_RDWR | O_NOCTTY) : -1;
  int result[2], pids[2];
  struct termios t; /* a new pty echoes: what the prompt must give back */
  if (c->slave < 0 || tcgetattr(c->slave, &t) != 0 || !(t.c_lflag & ECHO) ||
      pipe(result) != 0 || pipe(pids) != 0)
    return -1;
  fflush(stdout);
  c->shell = fork();
  if (c->shell == 0) {
    setsid();
    int tty = open(name, O_RDWR); /* the first open makes it ours */
    dup2(tty, STDIN_FILENO);
    pid_t pid = fork();
    if (pid == 0)
      prompting_process(result[1]);
    if (write(pids[1], &pid, sizeof(pid)) != sizeof(pid))
      _exit(4);
    int status = 0;
    waitpid(pid, &status, 0);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  close(result[1]);
  close(pids[1]);
  c->result = result[0];
  int got =
      c->shell > 0 && read(pids[0], &c->pid, sizeof(c->pid)) == sizeof(c->pid);
  close(pids[0]);
  return got ? 0 : -1;
}

/* Reads what the terminal shows until `want` appears (or 5 s pass);
 * want NULL: until nothing more comes for 0.2 s. */
static int pty_wait_for(pty_child *c, const char *want) {
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    c->seen[c->nseen] = '\0';
    if (want && strstr(c->seen, want))
      return 1;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long left = 5000 - ((now.tv_sec - start.tv_sec) * 1000 +
                        (now.tv_nsec - start.tv_nsec) / 1000000);
    struct pollfd p = {c->master, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, want ? (int)left : 200) <= 0)
      return 0;
    ssize_t r =
        read(c->master, c->seen + c->nseen, sizeof(c->seen) - 1 - c->nseen);
    if (r <= 0)
      return 0;
    c->nseen += (size_t)r;
  }
}

static int echo_on(const pty_child *c) {
  struct termios t;
  return tcgetattr(c->slave, &t) == 0 && (t.c_lflag & ECHO) != 0;
}

/* The state letter of /proc/PID/stat ('T': stopped). */
static char proc_state(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return '?';
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *paren = strrchr(buf, ')');
  return paren && paren[1] == ' ' ? paren[2] : '?';
}

static int wait_state(pid_t pid, char state) {
  for (int i = 0; i < 500; i++) {
    if (proc_state(pid) == state)
      return 1;
    usleep(10000);
  }
  return 0;
}

/* The shell's exit code, waiting up to 5 s (then killing both). */
static int pty_reap(pty_child *c) {
  int status = -1;
  for (int i = 0; i < 500; i++) {
    if (waitpid(c->shell, &status, WNOHANG) == c->shell)
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    usleep(10000);
  }
  kill(c->pid, SIGKILL);
  kill(c->shell, SIGKILL);
  waitpid(c->shell, &status, 0);
  return -1;
}

static void pty_close(pty_child *c) {
  close(c->master);
  close(c->slave);
  close(c->result);
}

static const char *child_result(pty_child *c) {
  static char buf[256];
  ssize_t n = read(c->result, buf, sizeof(buf) - 1);
  buf[n > 0 ? n : 0] = '\0';
  return buf;
}

TEST(prompt_reads_without_echo) {
  pty_child c;
  CHECK_EQ_INT(pty_start(&c), 0);
  CHECK(pty_wait_for(&c, "Password: "));
  CHECK(!echo_on(&c)); /* off before the prompt shows */
  CHECK(write(c.master, "s3cr", 4) == 4);
  CHECK(write(c.master, "et\n", 3) == 3);
  CHECK_EQ_INT(pty_reap(&c), 0);
  CHECK_EQ_STR(child_result(&c), "0|s3cret|");
  pty_wait_for(&c, NULL); /* what is left: an echo would be there by now */
  CHECK(strstr(c.seen, "s3cr") == NULL);
  CHECK(strstr(c.seen, "Password: ") != NULL);
  CHECK(echo_on(&c));
  pty_close(&c);
}

TEST(prompt_refuses_an_empty_line_and_the_end_of_input) {
  const char *typed[] = {"\n", "\x04"}; /* Enter; ^D (end of input) */
  const char *want[] = {"-1||no password entered",
                        "-1||no password entered (end of input)"};
  for (int i = 0; i < 2; i++) {
    pty_child c;
    CHECK_EQ_INT(pty_start(&c), 0);
    CHECK(pty_wait_for(&c, "Password: "));
    CHECK(write(c.master, typed[i], 1) == 1);
    CHECK_EQ_INT(pty_reap(&c), 0);
    CHECK_EQ_STR(child_result(&c), want[i]);
    CHECK(echo_on(&c));
    pty_close(&c);
  }
}

TEST(prompt_restores_the_terminal_on_sigint) {
  pty_child c;
  CHECK_EQ_INT(pty_start(&c), 0);
  CHECK(pty_wait_for(&c, "Password: "));
  CHECK(write(c.master, "half", 4) == 4);
  CHECK(!echo_on(&c));
  kill(c.pid, SIGINT);
  CHECK_EQ_INT(pty_reap(&c), 128 + SIGINT); /* ended by it */
  CHECK(echo_on(&c));
  pty_wait_for(&c, NULL);
  CHECK(strstr(c.seen, "half") == NULL);
  pty_close(&c);
}

TEST(prompt_restores_the_terminal_when_stopped_and_asks_again) {
  pty_child c;
  CHECK_EQ_INT(pty_start(&c), 0);
  CHECK(pty_wait_for(&c, "Password: "));
  kill(c.pid, SIGTSTP);
  CHECK(wait_state(c.pid, 'T')); /* stopped */
  CHECK(echo_on(&c)); /* the shell gets its terminal back as it was */
  c.nseen = 0;
  kill(c.pid, SIGCONT);
  CHECK(pty_wait_for(&c, "Password: ")); /* asked again */
  CHECK(!echo_on(&c));
  CHECK(write(c.master, "again\n", 6) == 6);
  CHECK_EQ_INT(pty_reap(&c), 0);
  CHECK_EQ_STR(child_result(&c), "0|again|");
  CHECK(echo_on(&c));
  pty_close(&c);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(cred_names_a_file_of_the_credentials_directory),
      T(modes_inside_and_outside_the_credentials_directory),
      T(secret_too_long_is_refused_not_cut),
      T(is_credential),
      T(prompt_needs_a_terminal),
      T(prompt_reads_without_echo),
      T(prompt_refuses_an_empty_line_and_the_end_of_input),
      T(prompt_restores_the_terminal_on_sigint),
      T(prompt_restores_the_terminal_when_stopped_and_asks_again)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
