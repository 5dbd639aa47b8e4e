"""systemd credentials and dynamic users, emulated for the e2e tests.

systemd's LoadCredential= copies a file into a directory only the service
may read and names it in $CREDENTIALS_DIRECTORY; DynamicUser= runs the
service as a user made up at start, who cannot read root's files. The
tests cannot run systemd itself here (PID 1 is not systemd), so:

- Credentials(...) makes such a directory: files mode 0400 (or as asked),
  owned by the service user, in a directory of mode 0500 owned by it, the
  way systemd leaves them;
- SERVICE_UID/GID is that user when the tests run as root (nobody,
  65534), and as_service_user(argv) wraps a command with setpriv(1) to run
  as it; as another user everything runs as that user (ownership cannot
  change then, and as_service_user() is the identity).
"""

import os
import shutil
import tempfile

from harness import BIN_DIR

SETPRIV = shutil.which("setpriv")
IS_ROOT = os.geteuid() == 0


def _others_can_reach(path):
    """Whether a user with no rights of its own (nobody) can reach path:
    every directory on the way needs the others' x bit (a clone under
    /root or a mktemp -d directory, both 0700, has none)."""
    p = os.path.abspath(path)
    while True:
        if not os.stat(p).st_mode & 0o001:
            return False
        parent = os.path.dirname(p)
        if parent == p:
            return True
        p = parent


CAN_SWITCH = IS_ROOT and SETPRIV is not None and _others_can_reach(BIN_DIR)
SERVICE_UID = 65534 if CAN_SWITCH else os.geteuid()
SERVICE_GID = 65534 if CAN_SWITCH else os.getegid()


def as_service_user(argv):
    """argv run as the service user (setpriv, no other groups) when the
    tests are root; unchanged otherwise. setpriv execs in place: the pid
    stays the program's, so signals reach it."""
    if not CAN_SWITCH:
        return list(argv)
    return [SETPRIV, "--reuid=%d" % SERVICE_UID, "--regid=%d" % SERVICE_GID,
            "--clear-groups"] + list(argv)


class Credentials:
    """A credentials directory: files {ID: text} (str or bytes, or a path
    to copy, given as ("copy", PATH)), each mode `mode` and owned by
    (uid, gid) (the service user by default), in <base>/creds. The base
    is reachable by the service user (0711). cleanup() removes it all."""

    def __init__(self, files, mode=0o400, uid=None, gid=None):
        uid = SERVICE_UID if uid is None else uid
        gid = SERVICE_GID if gid is None else gid
        self.base = tempfile.mkdtemp(prefix="wstun-creds.")
        os.chmod(self.base, 0o711)
        self.dir = os.path.join(self.base, "creds")
        os.mkdir(self.dir, 0o700)
        for name, content in files.items():
            self.add(name, content, mode, uid, gid)
        self._chown(self.dir, SERVICE_UID, SERVICE_GID)
        os.chmod(self.dir, 0o500)

    @staticmethod
    def _chown(path, uid, gid):
        if IS_ROOT:
            os.chown(path, uid, gid)

    def add(self, name, content, mode=0o400, uid=None, gid=None):
        path = os.path.join(self.dir, name)
        if isinstance(content, tuple) and content[0] == "copy":
            with open(content[1], "rb") as f:
                content = f.read()
        if isinstance(content, str):
            content = content.encode()
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, mode)
        self._chown(path, SERVICE_UID if uid is None else uid,
                    SERVICE_GID if gid is None else gid)
        return path

    def env(self):
        return {"CREDENTIALS_DIRECTORY": self.dir}

    def cleanup(self):
        if os.path.isdir(self.dir):
            os.chmod(self.dir, 0o700)
        shutil.rmtree(self.base, ignore_errors=True)
