"""Helpers shared by the Python benches in benches/.

The formatting and machine helpers are benches/footprint's own (imported from that script,
not copied), so every bench reports dates, machines, bytes and verdicts the same way.
"""

import importlib.machinery
import importlib.util
import math
import os
import re
import subprocess
from pathlib import Path

BENCHES = Path(__file__).resolve().parent.parent
REPO = BENCHES.parent
MIB = 1024 * 1024


def _load_footprint():
    loader = importlib.machinery.SourceFileLoader("weft_bench_footprint", str(BENCHES / "footprint"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


footprint = _load_footprint()

# Re-exported from benches/footprint.
machine_info = footprint.machine_info
proc_status = footprint.proc_status  # {"VmRSS": bytes, "VmHWM": bytes}
get_status = footprint.get_status  # GET http://127.0.0.1:<port>/ready -> status or None
read_buildinfo = footprint.read_buildinfo
mib = footprint.mib
grp = footprint.grp
verdict = footprint.verdict
sh = footprint.sh

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_memory(pid):
    """VmRSS, VmHWM, RssAnon (heap, stacks: the process's own) and RssFile (mapped files:
    the binary and shared libraries, shared with other processes mapping them), bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (clear_refs 5, Linux ≥ 4.0), so the next VmHWM
    read is the peak since now."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list (p in 0–100)."""
    if not sorted_values:
        return None
    k = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(k, len(sorted_values)) - 1]


def worktree_commit():
    """(short commit, dirty) of the work tree, read-only (no index lock)."""
    commit = sh("git", "rev-parse", "--short", "HEAD")
    st = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
        text=True, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    )
    return commit, bool(st.stdout.strip())


def replace_block(doc, begin, end, body, heading, intro, before=None):
    """Puts `body` between the markers in `doc`; when the markers are missing, adds a new
    section `heading` + `intro` + markers before the line `before` (or at the end).
    Text outside the markers is never changed."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        return re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, count=1, flags=re.S)
    section = f"{heading}\n\n{intro}\n\n{block}\n"
    if before and before in text:
        i = text.index(before)
        return text[:i] + section + "\n" + text[i:]
    return text.rstrip("\n") + "\n\n" + section
