"""Benchmark seapopym's LMTL model (the engine running `lmtl_blueprint()`) against a hand-written `jax.lax.scan` of it.

Run: `python benchmarks/bench_lmtl.py [--x64] [--repeats N] [--full]`. Exits non-zero if a check fails (different
numbers, too much memory for a checkpointed gradient); a missed timing target only warns."""
from __future__ import annotations

import math, os, resource, sys, time
from _args import parse_args

args = parse_args(__doc__, 5, "timed repeats of the 100x100 cases (50x more at 1x1)", lambda parser: parser.add_argument(
    "--full", action="store_true",
    help="also time forward+backward at 100x100 with all 528 cohorts (about 30 s a call: minutes)"))

import jax, jax.numpy as jnp, numpy as np, pandas as pd  # noqa: E402 (after the environment is set)
import seapopym  # noqa: E402
from seapopym import build_step_fn, compile_model, run  # noqa: E402
from seapopym.lmtl import DEFAULT_GROUPS, lmtl_blueprint, lmtl_config, seasonal_forcing  # noqa: E402

TARGET_RATIO = 1.2
# compiled temporaries of a checkpointed forward+backward at 100x100 with 528 cohorts (about 2 GB in float32)
MAX_GRAD_MEMORY_GB = 8.0 if args.x64 else 4.0
TIME_START, TIME_END, N_STEPS = "2001-01-01", "2002-01-01", 365  # daily steps
# Steps per checkpointed chunk: about sqrt(n) balances the carries kept per chunk against one chunk's residuals
CHUNK = round(math.sqrt(N_STEPS))
SHORT_TAU_R0 = DEFAULT_GROUPS["epipelagic"]["tau_r0"] / 10  # 52.8 days: 53 cohorts instead of 528
from _report import COMPILES, FAILURES, WARNINGS, check, first_call, interleaved_timings, ratio_table  # noqa: E402

# %% The hand-written scheme

def gillooly(temperature):
    "Gillooly et al. (2002) normalised temperature, °C."
    return temperature / (1 + temperature / 273.0)

def checkpointed_scan(step, carry, xs, chunk_size: int|None):
    "`lax.scan(step, carry, xs)`; with `chunk_size`, as `jax.checkpoint`ed chunks of that many steps, then the rest."
    n_steps = jax.tree.leaves(xs)[0].shape[0]
    if chunk_size is None or chunk_size >= n_steps: return jax.lax.scan(step, carry, xs)
    n_chunks = n_steps // chunk_size
    end = n_chunks * chunk_size
    chunks = jax.tree.map(lambda x: x[:end].reshape((n_chunks, chunk_size) + x.shape[1:]), xs)
    carry, ys = jax.lax.scan(jax.checkpoint(lambda c, x: jax.lax.scan(step, c, x)), carry, chunks)
    ys = jax.tree.map(lambda y: y.reshape((end,) + y.shape[2:]), ys)
    if end == n_steps: return carry, ys
    carry, tail = jax.lax.scan(step, carry, jax.tree.map(lambda x: x[end:], xs))
    return carry, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, tail)

def hand_lmtl(params: dict, state: dict, forcings: dict, day_of_year, *, dt: float, chunk_size: int|None = None):
    """One LMTL group (threshold recruitment, explicit biomass) as a `lax.scan` on (Y, X, C) arrays:
    `(final state, {"biomass": per step})` with the group axis F (of length 1) put back, as `run` returns them."""
    p = {k: v[0] if v.ndim else v for k, v in params.items()}  # the one group
    fraction = dt / p["cohort_width"]  # of each cohort moving on to the next in a step
    ages = (jnp.arange(state["production"].shape[-1]) + 1) * p["cohort_width"]  # (C,)
    lat = jnp.deg2rad(forcings["latitude"])[:, None]  # (Y, 1)
    t_ref = gillooly(p["T_ref"])
    day, night = p["day_layer"].astype(jnp.int32), p["night_layer"].astype(jnp.int32)

    def step(carry, x):
        production, biomass = carry  # (Y, X, C), (Y, X)
        temperature, npp, doy = x  # (Z, Y, X), (Y, X), ()
        theta = 0.2163108 + 2 * jnp.arctan(0.9671396 * jnp.tan(0.00860 * (doy - 186)))
        phi = jnp.arcsin(0.39795 * jnp.cos(theta))
        cos_hour = jnp.clip(jnp.sin(lat) * jnp.sin(phi) / (jnp.cos(lat) * jnp.cos(phi)), -1.0, 1.0)
        day_length = 1 - jnp.arccos(cos_hour) / jnp.pi  # (Y, 1)
        t_norm = gillooly(temperature)
        t_mean = jnp.maximum(day_length * t_norm[day] + (1 - day_length) * t_norm[night], t_ref)  # (Y, X)
        mortality_rate = p["lambda_0"] * jnp.exp(p["gamma_lambda"] * (t_mean - t_ref))
        recruitment_age = p["tau_r0"] * jnp.exp(p["gamma_tau_r"] * (t_mean - t_ref))
        shifted = jnp.concatenate([(p["energy_transfer"] * npp)[..., None], production[..., :-1]], axis=-1)
        aged = ((1 - fraction) * production + fraction * shifted).at[..., -1].add(fraction * production[..., -1])
        recruited = ages >= recruitment_age[..., None]
        recruitment = jnp.sum(jnp.where(recruited, aged, 0.0), axis=-1) / fraction
        production = jnp.clip(jnp.where(recruited, 0.0, aged), 0, None)
        biomass = jnp.clip(biomass + dt * (recruitment - mortality_rate * biomass), 0, None)
        return (production, biomass), biomass

    xs = (forcings["temperature"], forcings["npp"], day_of_year)
    (production, biomass), out = checkpointed_scan(step, (state["production"][0], state["biomass"][0]), xs, chunk_size)
    return {"production": production[None], "biomass": biomass[None]}, {"biomass": out[:, None]}

# %% The two implementations on one model

def lmtl_case(shape: tuple, tau_r0: float):
    "The engine's LMTL with one epipelagic group on a `shape` grid, 365 daily steps, seasonal forcing; its inputs."
    ny, nx = shape
    lat = np.array([30.0]) if ny == 1 else np.linspace(-60, 60, ny)
    time = pd.date_range(TIME_START, TIME_END, freq="D")
    temperature, npp = seasonal_forcing(time=time, lat=lat, lon=150.0 + np.arange(nx))
    group = {**DEFAULT_GROUPS["epipelagic"], "tau_r0": tau_r0}
    model = compile_model(lmtl_blueprint(), lmtl_config(temperature=temperature, npp=npp, groups={"epipelagic": group},
                                                        time_start=TIME_START, time_end=TIME_END))
    assert model.n_steps == N_STEPS, model
    return model, (model.parameters, model.state, model.forcings, model.clock["day_of_year"])

def forwards(model, chunk_size: int|None = None):
    "`(params, state, forcings, day_of_year) -> (final state, {'biomass': per step})`: hand-written and engine."
    step_fn = build_step_fn(model, export_variables=["biomass"])
    hand = lambda p, s, f, doy: hand_lmtl(p, s, f, doy, dt=model.dt, chunk_size=chunk_size)
    # the engine reads day_of_year from model.clock itself
    eng = lambda p, s, f, doy: run(step_fn, model, s, p, forcings=f, chunk_size=chunk_size)
    return hand, eng

def mse_grad(forward):
    "`(params, state, forcings, doy, target) -> (loss, d loss / d params)`, the MSE of the biomass per step."
    loss = lambda p, s, f, doy, target: jnp.mean((forward(p, s, f, doy)[1]["biomass"] - target) ** 2)
    return jax.value_and_grad(loss)

def biomass_target(model, fargs):
    "Biomass per step with 10% more energy transfer and 10% less mortality: a target the parameters do not reach."
    p = dict(fargs[0])
    p["energy_transfer"], p["lambda_0"] = p["energy_transfer"] * 1.1, p["lambda_0"] * 0.9
    hand, _ = forwards(model)
    return jax.jit(lambda *a: hand(*a)[1]["biomass"])(p, *fargs[1:])

def allclose(a, b, rtol: float = 1e-5) -> bool:
    "Two pytrees of the same structure, every leaf close (zeros must match exactly); float64 runs use `rtol=1e-9`."
    rtol = 1e-9 if args.x64 else rtol
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.allclose(x, y, rtol=rtol, atol=0) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

def max_rel_diff(a, b) -> float:
    "Largest |a - b| / |b| over the leaves (0/0 counts as 0)."
    rel = lambda x, y: np.max(np.abs(x - y) / np.maximum(np.abs(y), np.finfo(np.asarray(y).dtype).tiny), initial=0)
    return max(float(rel(np.asarray(x), np.asarray(y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

# %% Timing helpers

def temp_gb(jitted, fargs) -> tuple:
    "GB of temporaries XLA allocates for `jitted(*fargs)`, and the seconds spent compiling it (0 if it already was)."
    before = COMPILES["seconds"]
    gb = jitted.lower(*fargs).compile().memory_analysis().temp_size_in_bytes / 1e9
    return gb, COMPILES["seconds"] - before

# %% 1. Memory of forward+backward at 100x100 with 528 cohorts

def check_memory(chunk_size: int):
    "Compile (not run) forward+backward at 100x100 with 528 cohorts, without and with checkpointing; print temporaries."
    model, fargs = lmtl_case((100, 100), DEFAULT_GROUPS["epipelagic"]["tau_r0"])
    fargs = fargs + (jnp.zeros((model.n_steps,) + model.state["biomass"].shape, model.state["biomass"].dtype),)
    print(f"  {model}; production {model.state['production'].shape}, "
          f"{model.state['production'].nbytes / 1e6:.0f} MB a step")
    _, eng = forwards(model)
    naive, _ = temp_gb(jax.jit(mse_grad(eng)), fargs)
    hand_ck, eng_ck = (jax.jit(mse_grad(f)) for f in forwards(model, chunk_size))
    (gb_hand, comp_hand), (gb_eng, comp_eng) = temp_gb(hand_ck, fargs), temp_gb(eng_ck, fargs)
    n_chunks, rest = divmod(model.n_steps, chunk_size)
    print(f"  compiled temporaries of value_and_grad: engine without checkpointing {naive:.1f} GB (not run); "
          f"chunk_size={chunk_size} ({n_chunks} checkpointed chunks of {chunk_size} steps, then {rest} plain steps): "
          f"engine {gb_eng:.2f} GB, hand-written {gb_hand:.2f} GB")
    check(max(gb_eng, gb_hand) < MAX_GRAD_MEMORY_GB,
          f"checkpointed forward+backward at 100x100, 528 cohorts, fits in {MAX_GRAD_MEMORY_GB} GB of temporaries")
    return model, fargs[:-1], (hand_ck, eng_ck), (comp_hand, comp_eng)

# %% 2. Speed

def bench_case(rows: list, label: str, model, fargs, kind: str, repeats: int, chunk_size: int|None = None,
               fns=None, compile_s=None):
    """Check that both versions agree on their first call, then time them interleaved; add a row to `rows`.
    `fns` are the two jitted functions if they were compiled already, and `compile_s` what that took."""
    if kind == "forward":
        fh, fe = fns or (jax.jit(f) for f in forwards(model, chunk_size))
        rtol, what = 1e-5, "biomass per step and final production"
    else:
        fargs = fargs + (biomass_target(model, fargs),)
        fh, fe = fns or (jax.jit(mse_grad(f)) for f in forwards(model, chunk_size))
        rtol, what = 1e-4, "loss and gradients"
    (out_h, comp_h), (out_e, comp_e) = first_call(fh, fargs), first_call(fe, fargs)
    comp_h, comp_e = compile_s or (comp_h, comp_e)
    check(allclose(out_h, out_e, rtol), f"{kind} {label}: engine and hand-written give the same {what} "
                                        f"(largest relative difference {max_rel_diff(out_e, out_h):.1e})")
    if kind != "forward" and label.startswith("100x100"):
        print(f"       compiled temporaries: hand-written {temp_gb(fh, fargs)[0]:.2f} GB, "
              f"engine {temp_gb(fe, fargs)[0]:.2f} GB")
    (th, mh, ch), (te, me, ce) = interleaved_timings([fh, fe], fargs, repeats)
    rows.append(dict(case=f"{kind} {label}", reps=repeats, th=th, te=te, ratio_min=me / mh,
                     ratio_cpu=ce / ch, comp_h=comp_h, comp_e=comp_e))

def print_table(rows: list):
    "The speed table (medians; ratios of the fastest runs and of CPU times as noise checks); warns on a missed target."
    ratio_table(rows, [("case", 40, "", "case"), ("reps", 5, "", "reps"), ("hand ms", 10, ".2f", "hand_ms"),
                       ("engine ms", 11, ".2f", "engine_ms"), ("engine/hand", 13, ".3f", "ratio"),
                       ("min ratio", 11, ".3f", "ratio_min"), ("cpu ratio", 11, ".3f", "ratio_cpu"),
                       ("compile hand s", 16, ".2f", "comp_h"), ("compile engine s", 18, ".2f", "comp_e")],
                TARGET_RATIO, {"ratio_min": "of the fastest runs", "ratio_cpu": "of CPU times"})

# %%

if __name__ == "__main__":
    t0 = time.perf_counter()
    print(f"seapopym {seapopym.__version__}, JAX {jax.__version__} on {jax.devices()[0].platform}, "
          f"{'float64' if args.x64 else 'float32'}, {os.cpu_count()} CPU cores")
    print(f"LMTL (threshold recruitment, explicit biomass), one epipelagic group, {TIME_START} to {TIME_END} "
          f"(365 daily steps), seasonal_forcing; the hand-written scan gets the same parameters, state and forcings")
    chunk = CHUNK
    print("\n1. Memory: forward+backward keeps the production state (100x100x528) of every step unless checkpointed")
    full_case = check_memory(chunk)
    print(f"\n2. Speed: jitted forward, and forward+backward (value_and_grad of the biomass MSE w.r.t. the 9 "
          f"parameters); median of interleaved repeats.\n   At 100x100, forward+backward uses run(..., "
          f"chunk_size={chunk}) and the same checkpointed chunks in the hand-written scan, and tau_r0 = "
          f"{SHORT_TAU_R0:.2f} days ({math.ceil(SHORT_TAU_R0)} cohorts):\n   with 528 cohorts one call takes about "
          f"30 s on 2 cores{' (timed last)' if args.full else ' (--full times it)'}")
    rows, r = [], args.repeats
    tau_r0 = DEFAULT_GROUPS["epipelagic"]["tau_r0"]
    model, fargs = lmtl_case((1, 1), tau_r0)
    bench_case(rows, "1x1, 528 cohorts", model, fargs, "forward", 50 * r)
    bench_case(rows, "1x1, 528 cohorts", model, fargs, "fwd+grad", 50 * r)
    model, fargs = lmtl_case((100, 100), tau_r0)
    bench_case(rows, "100x100, 528 cohorts", model, fargs, "forward", r)
    model, fargs = lmtl_case((100, 100), SHORT_TAU_R0)
    bench_case(rows, "100x100, 53 cohorts", model, fargs, "forward", 2 * r)
    bench_case(rows, f"100x100, 53 cohorts, chunks {chunk}", model, fargs, "fwd+grad", r, chunk)
    if args.full:
        model, fargs, fns, compile_s = full_case
        bench_case(rows, f"100x100, 528 cohorts, chunks {chunk}", model, fargs, "fwd+grad", 3, fns=fns,
                   compile_s=compile_s)
    print_table(rows)
    print(f"\n{len(FAILURES)} failed check(s), {len(WARNINGS)} timing warning(s); "
          f"{time.perf_counter() - t0:.0f} s in all; peak resident memory of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB")
    sys.exit(1 if FAILURES else 0)
