"""What the server benchmarks measure besides time: the CPU a process (and its workers)
used, this process's own CPU, and latency percentiles. Imported as ``_measure`` (bench/
is put on sys.path by bench/conftest.py)."""
import math
import os
import resource


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rpartition(")")[2].split()


def process_cpu_seconds(pid):
    """utime + stime of a process and its child processes (the server's workers; Linux
    /proc), or None elsewhere."""
    try:
        fields = _stat_fields(pid)
        ticks = int(fields[11]) + int(fields[12])
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    child = _stat_fields(entry)
                except OSError:
                    continue
                if child[1] == str(pid):      # its parent
                    ticks += int(child[11]) + int(child[12])
    except OSError:
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile_ms(sorted_seconds, fraction):
    """The nearest-rank percentile (``fraction`` in (0, 1]) of sorted latencies, in ms."""
    return sorted_seconds[max(0, math.ceil(len(sorted_seconds) * fraction) - 1)] * 1000
