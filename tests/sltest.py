"""Helpers the Python end-to-end tests share (imported from the tests'
own directory, which Python puts first on the path)."""
import os
import time


def crashed(p):
    """A finished subprocess died of a signal, or a sanitizer reported (they
    exit with 1 but say so on stderr)."""
    return p.returncode < 0 or b"Sanitizer" in p.stderr or b"runtime error" in p.stderr


def wait_for(cond, seconds, step=0.05):
    """Polls cond() until it is truthy or `seconds` pass; returns its last value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


def pid_running(pid):
    """The process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def instance_pids(instance):
    """Running processes with the instance name as one of their arguments."""
    pids = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open("/proc/%s/cmdline" % e, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if instance.encode() in argv and pid_running(int(e)):
                pids.append(int(e))
    return pids


def segments(instance):
    """The instance's shared-memory segments left in /dev/shm."""
    return [f for f in os.listdir("/dev/shm") if f.startswith("sluice-%s-" % instance)]
