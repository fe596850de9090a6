"""What the benchmarks share: checks that fail the run, warnings for missed timing targets, and compile accounting."""
import statistics, time

import jax

FAILURES, WARNINGS = [], []

def check(ok: bool, what: str):
    "Print a check's result; remember failures for the exit status."
    print(f"  [{'ok' if ok else 'FAIL'}] {what}")
    if not ok: FAILURES.append(what)

def warn(what: str):
    "Print a missed timing target (timing is noisy, so it does not fail the run)."
    print(f"  [WARNING] {what}")
    WARNINGS.append(what)

# Compilations seen by jax.monitoring: how many XLA compiles, and the seconds spent tracing, lowering and compiling
COMPILES = {"count": 0, "seconds": 0.0}
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")

def _on_duration(event: str, seconds: float, **kwargs):
    "Listener counting compilations and adding up their time."
    if event in _COMPILE_EVENTS: COMPILES["seconds"] += seconds
    if event == _COMPILE_EVENTS[-1]: COMPILES["count"] += 1

jax.monitoring.register_event_duration_secs_listener(_on_duration)

def ratio_table(rows: list, columns: list, target: float, noise: dict):
    """Print `rows` (dicts with the hand-written and engine medians `th`, `te` in seconds, and the keys of `columns`,
    a list of (header, width, format, key); `hand_ms`, `engine_ms` and `ratio` are added here), then warn where engine/hand > `target`, quoting the `noise` ratios
    (key -> what it is the ratio of)."""
    rows = [dict(r, hand_ms=r["th"] * 1e3, engine_ms=r["te"] * 1e3, ratio=r["te"] / r["th"]) for r in rows]
    print("\n  " + "".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w, _, _) in enumerate(columns)))
    for r in rows:
        print("  " + "".join(f"{r[k]:<{w}{f}}" if i == 0 else f"{r[k]:>{w}{f}}" for i, (_, w, f, k) in enumerate(columns)))
    for r in rows:
        if r["ratio"] > target:
            quoted = ", ".join(f"{what} {r[k]:.3f}" for k, what in noise.items())
            warn(f"{r['case']}: engine/hand = {r['ratio']:.3f} > {target} (ratio {quoted})")

def first_call(f, fargs):
    "Result of `f`'s first call and the seconds JAX spent compiling it (trace, lower, XLA)."
    before = COMPILES["seconds"]
    out = jax.block_until_ready(f(*fargs))
    return out, COMPILES["seconds"] - before

def interleaved_timings(fns: list, fargs: tuple, repeats: int) -> list:
    """(median, min, median CPU) seconds per call of each function, calls interleaved (ABBA) so that all share the
    machine's noise. CPU time (all threads of this process) leaves out the time spent waiting for a shared core."""
    times, cpu = [[] for _ in fns], [[] for _ in fns]
    for i in range(repeats):
        for j in (range(len(fns)) if i % 2 == 0 else reversed(range(len(fns)))):
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fns[j](*fargs))
            times[j].append(time.perf_counter() - t0)
            cpu[j].append(time.process_time() - c0)
    return [(statistics.median(t), min(t), statistics.median(c)) for t, c in zip(times, cpu)]
