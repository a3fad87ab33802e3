"""Network namespaces for the benches: create, address, join to a bridge, enter, delete.

Mirrors controlplane/src/lab/netns.rs (the `weft demo` harness): a "node" namespace holds
a bridge; each pod is a namespace joined to it by a veth pair whose pod end is `eth0`
with a default route via the bridge address. Everything shells out to iproute2.

Entering a namespace is done on the calling thread with setns(2) (through ctypes: the
standard library has os.setns only from Python 3.12). A socket or a child process
created inside `inside(name)` lives in that namespace for good, so the harness can
poll a pod's loopback or spawn a process there without `ip netns exec`.

A `Registry` remembers every namespace and process it created; `cleanup()` stops the
processes (by pid), then kills whatever else still runs inside those namespaces (by pid,
from `ip netns pids`), then deletes the namespaces: nothing is left behind, also after a
failure or Ctrl-C.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    pass


def run(*cmd, check=True, capture=True):
    """Runs a command to completion; raises NetnsError naming it, with its stderr."""
    p = subprocess.run(list(cmd), stdin=subprocess.DEVNULL, capture_output=capture, text=True)
    if check and p.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed ({p.returncode}): {(p.stderr or '').strip()}")
    return p


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


@contextlib.contextmanager
def inside(name):
    """Runs the block with this thread in network namespace `name` (None: stay put)."""
    if name is None:
        yield
        return
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(fd)
        try:
            yield
        finally:
            _setns(back)
    finally:
        os.close(fd)
        os.close(back)


def pids_in(name):
    p = run("ip", "netns", "pids", name, check=False)
    return [int(x) for x in p.stdout.split()] if p.returncode == 0 else []


class Registry:
    """What a bench created: namespaces and processes, torn down by cleanup()."""

    def __init__(self, tag):
        self.tag = tag
        self.namespaces = []
        self.procs = []  # (Popen, stop signal)

    def netns(self, suffix):
        name = f"{self.tag}-{suffix}"
        run("ip", "netns", "del", name, check=False)
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def spawn(self, ns, argv, *, env=None, log=None, uid=None, stdout=None, stop=signal.SIGTERM):
        """Starts argv inside namespace ns (as uid/gid `uid` if given) and registers it."""
        def drop():
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        out = stdout if stdout is not None else (log or subprocess.DEVNULL)
        with inside(ns):
            p = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=log or subprocess.DEVNULL,
                preexec_fn=drop if uid is not None else None,
            )
        self.procs.append((p, stop))
        return p

    def stop(self, p, timeout=10.0):
        """Stops one registered process with its signal, then SIGKILL; returns its exit code."""
        sig = next((s for q, s in self.procs if q is p), signal.SIGTERM)
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = [(q, s) for q, s in self.procs if q is not p]
        return p.returncode

    def cleanup(self):
        for p, sig in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(sig)
        deadline = time.monotonic() + 5
        for p, _ in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        # Anything still inside our namespaces (an nginx worker, a helper) was started by
        # us, directly or not: kill it by pid before deleting the namespace.
        for name in self.namespaces:
            for pid in pids_in(name):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for name in reversed(self.namespaces):
            run("ip", "netns", "del", name, check=False)
        self.namespaces = []


def bridge(node, name, addr, prefix, mac="02:57:45:46:54:01"):
    """A bridge with a fixed MAC address. Left alone, a Linux bridge takes the lowest MAC
    of its ports, so attaching a pod can change it; pods that already resolved the
    gateway then send to the old MAC, which the bridge no longer accepts as its own, and
    their packets to the node are dropped until ARP re-validates (about 35 s later)."""
    run("ip", "-n", node, "link", "add", name, "address", mac, "type", "bridge")
    run("ip", "-n", node, "addr", "add", f"{addr}/{prefix}", "dev", name)
    run("ip", "-n", node, "link", "set", name, "up")


def attach(node, bridge_name, pod, host_if, addr, prefix, gateway):
    """Joins `pod` to the bridge in `node`: veth `host_if` (node side) / `eth0` (pod side)."""
    run("ip", "link", "add", host_if, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", pod)
    run("ip", "-n", node, "link", "set", host_if, "master", bridge_name)
    run("ip", "-n", node, "link", "set", host_if, "up")
    run("ip", "-n", pod, "addr", "add", f"{addr}/{prefix}", "dev", "eth0")
    run("ip", "-n", pod, "link", "set", "eth0", "up")
    run("ip", "-n", pod, "route", "add", "default", "via", gateway)


def stale_namespaces(prefix):
    """Namespaces named `<prefix><pid>-…` left by an earlier run whose process is gone."""
    p = run("ip", "netns", "list", check=False)
    out = []
    for line in p.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            out.append(name)
    return out
