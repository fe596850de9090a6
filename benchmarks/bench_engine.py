"""Benchmark seapopym's engine against a hand-written `jax.lax.scan` of the same Lotka-Volterra Euler scheme.

Run: `python benchmarks/bench_engine.py [--x64] [--repeats N]`. Exits non-zero if a check fails
(different numbers, a recompilation, data baked into the compiled program); a missed timing target only warns."""
from __future__ import annotations

import math, os, re, sys, time
from _args import parse_args

args = parse_args(__doc__, 21, "timed repeats of the 300x300 cases (30x more at 1x1)")

import jax, jax.numpy as jnp, numpy as np, pandas as pd, xarray as xr  # noqa: E402 (after the environment is set)
import seapopym  # noqa: E402
from seapopym import build_step_fn, compile_model, engine, run  # noqa: E402
from seapopym.models import LOTKA_VOLTERRA, default_config  # noqa: E402

TARGET_RATIO, TARGET_CALL_MS = 1.1, 5.0
from _report import COMPILES, FAILURES, WARNINGS, check, first_call, interleaved_timings, ratio_table, warn  # noqa: E402

# %% The two implementations

def hand_scan(params: dict, prey, predator, *, n_steps: int, dt: float) -> dict:
    "The Lotka-Volterra explicit Euler step written directly as a `lax.scan`; both states (clamped at 0) per step."
    def step(carry, _):
        prey, predator = carry
        predation = params["beta"] * prey * predator
        prey_new = jnp.clip(prey + dt * (params["alpha"] * prey - predation), 0, None)
        predator_new = jnp.clip(predator + dt * (params["delta"] * predation - params["gamma"] * predator), 0, None)
        return (prey_new, predator_new), {"prey": prey_new, "predator": predator_new}
    return jax.lax.scan(step, (prey, predator), length=n_steps)[1]

def lv_case(shape: tuple, time_end: str):
    "A Lotka-Volterra model and its two forward functions `(params, state) -> outputs`: hand-written and engine."
    model = compile_model(LOTKA_VOLTERRA, default_config("lotka_volterra", shape=shape, time_end=time_end))
    step_fn = build_step_fn(model, export_variables=["prey", "predator"])
    hand = lambda p, s: hand_scan(p, s["prey"], s["predator"], n_steps=model.n_steps, dt=model.dt)
    eng = lambda p, s: run(step_fn, model, s, p)[1]
    return model, step_fn, hand, eng

def mse_grad(forward):
    "`(params, state, target) -> (loss, d loss / d params)` for the MSE of the prey outputs against `target`."
    return jax.value_and_grad(lambda p, s, target: jnp.mean((forward(p, s)["prey"] - target) ** 2))

def scaled(params: dict, factor: float) -> dict:
    "Parameters times `factor`: same shapes and dtypes, different values."
    return {k: v * factor for k, v in params.items()}

def allclose(a, b, rtol: float = 1e-5) -> bool:
    "Every leaf of two pytrees close; float64 runs use `rtol=1e-9`."
    rtol = 1e-9 if args.x64 else rtol
    return all(np.allclose(x, y, rtol=rtol, atol=0) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

# %% 1. Overhead of calling `run` from Python

def timed_calls(f, n: int) -> float:
    "Mean milliseconds per call of `f()` over `n` calls (each waited for)."
    t0 = time.perf_counter()
    for _ in range(n): jax.block_until_ready(f())
    return (time.perf_counter() - t0) / n * 1e3

def bench_overhead(n_calls: int = 200):
    "Per-call time of un-jitted `run` at 1x1; repeated calls, with new parameter values too, must reuse one compile."
    model, step_fn, hand, _ = lv_case((1, 1), "2000-06-30")
    p, s = model.parameters, model.state
    call = lambda params=p: run(step_fn, model, s, params)
    _, compile_s = first_call(call, ())
    hand_jit = jax.jit(hand)
    jax.block_until_ready(hand_jit(p, s))
    other = scaled(p, 1.5)  # made before counting: computing it compiles a multiply
    size, count = engine._run._cache_size(), COMPILES["count"]
    run_ms, hand_ms = timed_calls(call, n_calls), timed_calls(lambda: hand_jit(p, s), n_calls)
    print(f"  run(...) from Python at 1x1 ({model.n_steps} steps): {run_ms:.3f} ms per call over {n_calls} calls "
          f"(first call {compile_s:.3f} s of compile); a jitted hand-written scan: {hand_ms:.3f} ms per call")
    check(engine._run._cache_size() == size and COMPILES["count"] == count,
          f"{n_calls} calls of run(...): no recompilation (engine._run cache size {size}, XLA compiles +0)")
    out1, out2 = call()[1], call(other)[1]
    check(engine._run._cache_size() == size and COMPILES["count"] == count,
          "run(...) with different parameter values (same shapes): no recompilation")
    check(not allclose(out1, out2), "run(...) with different parameter values: different outputs")
    if run_ms > TARGET_CALL_MS: warn(f"run(...) takes {run_ms:.3f} ms per call > {TARGET_CALL_MS} ms")

# %% 2. Parameters and forcings are arguments, not constants

_CONSTANT = re.compile(r"stablehlo\.constant dense<(.*?)> : tensor<([^>]*)>")

def baked_constants(hlo: str) -> list:
    "Shapes of the constants in StableHLO text that hold more than one distinct value (data baked into the program)."
    found = []
    for value, ty in _CONSTANT.findall(hlo):
        size = math.prod(int(d) for d in ty.split("x")[:-1])
        if size > 1 and value[:1] in '["': found.append(ty)
    return found

def main_arguments(hlo: str) -> list:
    "Argument types of the lowered program's entry function `main`."
    signature = re.search(r"func\.func public @main\((.*?)\) ->", hlo, re.S).group(1)
    return re.findall(r"%arg\d+: tensor<([^>]*)>", signature)

def check_arguments(label: str, f, fargs: tuple, changed: tuple):
    "`jax.jit(f)` takes every leaf of `fargs` as an argument, bakes in no data, reruns on `changed` with no recompile."
    hlo = jax.jit(f).lower(*fargs).as_text()
    leaves = jax.tree.leaves(fargs)
    want = sorted("".join(f"{n}x" for n in x.shape) + str(x.dtype).replace("float", "f") for x in leaves)
    check(sorted(main_arguments(hlo)) == want, f"{label}: the lowered program takes all {len(leaves)} parameters, "
                                               f"states and forcings as arguments ({', '.join(want)})")
    consts = jax.make_jaxpr(f)(*fargs).consts
    check(not baked_constants(hlo) and not consts,
          f"{label}: no data constant in the StableHLO ({baked_constants(hlo) or 'none'}) nor in the jaxpr "
          f"({len(consts)} consts)")
    jitted = jax.jit(f)
    out = jax.block_until_ready(jitted(*fargs))
    count = COMPILES["count"]
    out_changed = jax.block_until_ready(jitted(*changed))
    check(jitted._cache_size() == 1 and COMPILES["count"] == count and not allclose(out, out_changed),
          f"{label}: new values give new results with no recompilation")

def relax_model(shape=(50, 50), days: int = 60):
    "A tracer relaxing towards a tenth of a daily temperature forcing, on a `shape` grid for `days` days."
    @seapopym.functional("bench:relax", units={"c": "g/m^3", "temperature": "degC", "k": "1/s"},
                         outputs={"rate": "g/m^3/s"})
    def relax(c, temperature, k):
        "Relaxation of `c` towards `0.1 * temperature` at rate `k`."
        return k * (0.1 * temperature - c)
    bp = seapopym.Blueprint.from_dict({
        "name": "relax",
        "state": {"c": {"units": "g/m^3", "dims": ["Y", "X"], "bounds": [0, None]}},
        "parameters": {"k": {"units": "1/s"}},
        "forcings": {"temperature": {"units": "degC", "dims": ["Y", "X"]}},
        "processes": [{"function": "bench:relax", "outputs": {"rate": "relaxation"}}],
        "tendencies": {"c": ["relaxation"]}})
    times = pd.date_range("2000-01-01", periods=days, freq="1D")
    temperature = xr.DataArray(np.random.default_rng(0).uniform(10, 20, (days,) + shape), dims=["time", "Y", "X"],
                               coords={"time": times}, attrs={"units": "degC"})
    config = seapopym.Config.from_dict({
        "parameters": {"k": xr.DataArray(0.2, attrs={"units": "1/day"})},
        "forcings": {"temperature": temperature},
        "initial_state": {"c": xr.DataArray(np.ones(shape), dims=["Y", "X"])},
        "execution": {"time_start": str(times[0].date()), "time_end": str((times[-1] + pd.Timedelta("1D")).date()),
                      "dt": "1d"}})
    return compile_model(bp, config)

def check_no_baking():
    "Parameters, states and forcings reach the compiled program as arguments, at 300x300 and with a forcing."
    model, step_fn, _, _ = lv_case((300, 300), "2000-12-31")
    p, s = model.parameters, model.state
    check_arguments("LV 300x300", lambda p, s: run(step_fn, model, s, p)[1]["prey"], (p, s), (scaled(p, 1.5), s))
    m = relax_model()
    sf = build_step_fn(m)
    f = lambda p, s, f: run(sf, m, s, p, forcings=f)[1]["c"]
    print(f"  forcing model: {m}, temperature {m.forcings['temperature'].shape}")
    check_arguments("relax 50x50 with forcing", f, (m.parameters, m.state, m.forcings),
                    (m.parameters, m.state, {"temperature": m.forcings["temperature"] + 5.0}))
    call = lambda f: run(sf, m, m.state, m.parameters, forcings=f)[1]["c"]
    other = {"temperature": m.forcings["temperature"] * 0.5}
    out = jax.block_until_ready(call(m.forcings))
    size, count = engine._run._cache_size(), COMPILES["count"]
    out_other = jax.block_until_ready(call(other))
    check(engine._run._cache_size() == size and COMPILES["count"] == count and not allclose(out, out_other),
          "relax: un-jitted run(...) with a different forcing: new results, no recompilation")

# %% 3. Speed

def bench_speed() -> list:
    "Time forward and forward+backward, hand-written vs engine, at 1x1 and 300x300; rows of the table."
    rows = []
    for name, shape, time_end, repeats in (("1x1", (1, 1), "2000-06-30", 30 * args.repeats),
                                           ("300x300", (300, 300), "2000-12-31", args.repeats)):
        model, _, hand, eng = lv_case(shape, time_end)
        p, s = model.parameters, model.state
        # A fixed target the parameters do not reach, from its own function so that the timed ones start cold
        target = jax.jit(lambda p, s: hand(p, s)["prey"])(scaled(p, 1.05), s)
        # float32 gradients: d loss/d alpha is ~1e-3 off its float64 value in both versions (cancellation over steps)
        for kind, make, fargs, rtol in (("forward", lambda f: f, (p, s), 1e-5),
                                        ("fwd+grad", mse_grad, (p, s, target), 2e-3)):
            fh, fe = jax.jit(make(hand)), jax.jit(make(eng))
            (out_h, comp_h), (out_e, comp_e) = first_call(fh, fargs), first_call(fe, fargs)
            check(allclose(out_h, out_e, rtol), f"{kind} {name}: engine and hand-written give the same "
                                                f"{'outputs' if kind == 'forward' else 'loss and gradients'}")
            (th, mh, _), (te, me, _) = interleaved_timings([fh, fe], fargs, repeats)
            rows.append(dict(case=f"{kind} {name}", steps=model.n_steps, reps=repeats, th=th, te=te, ratio_min=me / mh,
                             comp_h=comp_h, comp_e=comp_e))
    return rows

def print_table(rows: list):
    "The speed table (medians, and the ratio of the fastest runs as a noise check); warns if a ratio misses the target."
    ratio_table(rows, [("case", 18, "", "case"), ("steps", 6, "", "steps"), ("reps", 6, "", "reps"),
                       ("hand ms", 11, ".3f", "hand_ms"), ("engine ms", 11, ".3f", "engine_ms"),
                       ("engine/hand", 13, ".3f", "ratio"), ("min ratio", 11, ".3f", "ratio_min"),
                       ("compile hand s", 16, ".3f", "comp_h"), ("compile engine s", 18, ".3f", "comp_e")],
                TARGET_RATIO, {"ratio_min": "of the fastest runs"})

# %%

if __name__ == "__main__":
    t0 = time.perf_counter()
    print(f"seapopym {seapopym.__version__}, JAX {jax.__version__} on {jax.devices()[0].platform}, "
          f"{'float64' if args.x64 else 'float32'}, {os.cpu_count()} CPU cores")
    print("\n1. Overhead of un-jitted run(...) from Python (measured first, before the large arrays churn memory)")
    bench_overhead()
    print("\n2. Parameters and forcings are arguments of the compiled program, not constants")
    check_no_baking()
    print("\n3. Speed: jitted forward and forward+backward (value_and_grad of the prey MSE w.r.t. the 4 parameters); "
          "median of interleaved repeats")
    print_table(bench_speed())
    print(f"\n{len(FAILURES)} failed check(s), {len(WARNINGS)} timing warning(s); "
          f"{time.perf_counter() - t0:.0f} s in all")
    sys.exit(1 if FAILURES else 0)
