"""Benchmark seapopym's compiled calibration loops (Adam, CMA-ES) on an LMTL twin: one cell, three years, daily steps.

Run: `python benchmarks/bench_calibration.py [--x64] [--repeats N] [--no-ynn]`. Exits non-zero if a check fails
(NaN, a bound left, no descent, CMA-ES missing the truth, the compiled and Python loops taking different steps);
a missed timing target only warns."""
from __future__ import annotations

import os, statistics, sys, time, types
from _args import parse_args

args = parse_args(__doc__, 15, "timed repeats of each single evaluation in section 4", lambda parser: parser.add_argument(
    "--no-ynn", action="store_true",
    help="turn off XLA:CPU's YNN library fusions (adds --xla_cpu_experimental_ynn_fusion_type= to XLA_FLAGS)"))
if args.no_ynn: os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_experimental_ynn_fusion_type=").strip()

import dataclasses  # noqa: E402
import jax, jax.numpy as jnp, numpy as np, optax  # noqa: E402 (after the environment is set)
import seapopym  # noqa: E402
from seapopym import Blueprint, compile_model, simulate  # noqa: E402
from seapopym.calibration import CalibrationProblem, Objective, Parameter  # noqa: E402
from seapopym.lmtl import DEFAULT_GROUPS, _ages, _cohort_step, _recruit, lmtl_blueprint, lmtl_default_config  # noqa: E402
from seapopym.models import LOTKA_VOLTERRA, default_config  # noqa: E402
from seapopym.optimize import cma_es, minimize_gradient  # noqa: E402

TARGET_ADAM_S, TARGET_CMA_S = 2.0, 2.0  # 300 Adam steps; CMA-ES, population 32, 150 generations; compilation included
N_STEPS, POPULATION, GENERATIONS = 300, 32, 150
from _report import COMPILES, FAILURES, WARNINGS, check, warn  # noqa: E402

def timed(f):
    "`(result, wall seconds, compile seconds)` of `f()`: compile is what JAX spent tracing, lowering and compiling."
    before = COMPILES["seconds"]
    t0 = time.perf_counter()
    out = jax.block_until_ready(f())
    return out, time.perf_counter() - t0, COMPILES["seconds"] - before

# %% The twin

ESTIMATED = ("energy_transfer", "gamma_lambda", "gamma_tau_r")

def lmtl_twin():
    "The twin's model, true values and clean biomass observations on 10% of the days of 2001-2002 (a fixed draw)."
    groups = {"epipelagic": DEFAULT_GROUPS["epipelagic"]}
    config = lmtl_default_config(groups=groups, time_start="2000-01-01", time_end="2003-01-01", recruitment="smooth")
    model = compile_model(lmtl_blueprint(recruitment="smooth"), config)
    biomass = simulate(model, ["biomass"]).biomass
    fit_days = np.flatnonzero(biomass.time.values >= np.datetime64("2001-01-01"))  # the first year is spin-up
    days = np.sort(np.random.default_rng(0).choice(fit_days, len(fit_days) // 10, replace=False))
    true = {k: float(groups["epipelagic"][k]) for k in ESTIMATED}
    return model, true, biomass.isel(time=days)

def twin_parameters(true: dict) -> dict:
    "Bounds 0.01x to 5x the truth (the other way round for the negative gamma_tau_r), starting at half the truth."
    return {k: Parameter(min(0.01 * v, 5 * v), max(0.01 * v, 5 * v), initial=0.5 * v) for k, v in true.items()}

def ratios(theta, true: dict) -> str:
    "Recovered / true value of each estimated parameter."
    return ", ".join(f"{k} {float(t) / v:.4f}" for (k, v), t in zip(true.items(), theta))

def check_result(label: str, res, problem, n_iterations: int):
    "Checks common to every optimiser: the whole budget run, no NaN, every iterate within the bounds."
    check(res.n_iterations == n_iterations, f"{label}: ran all {n_iterations} iterations (ran {res.n_iterations})")
    check(np.isfinite(res.loss_history).all() and np.isfinite(res.theta_history).all() and np.isfinite(res.theta).all(),
          f"{label}: no NaN or inf in the loss and parameter histories")
    lo = np.array([e.lower for e in problem.space.entries]); hi = np.array([e.upper for e in problem.space.entries])
    check(bool(((res.theta_history >= lo) & (res.theta_history <= hi)).all()), f"{label}: every iterate within the bounds")

# %% 1 and 2. The compiled loops, compilation included

def bench_adam(problem, true):
    "300 Adam steps (optax.adam(0.05), the default) with `minimize_gradient`; a second call reuses the compiled loop."
    res, wall, comp = timed(lambda: minimize_gradient(problem, max_steps=N_STEPS, tol=0, progress=False))
    print(f"  minimize_gradient, {N_STEPS} Adam steps: {wall:.2f} s in all = {comp:.2f} s compiling + {wall - comp:.2f} s "
          f"running ({(wall - comp) / N_STEPS * 1e3:.2f} ms per step)")
    print(f"  loss {res.loss_history[0]:.4g} -> {res.loss:.4g}; recovered/true: {ratios(res.theta, true)}")
    check_result("Adam", res, problem, N_STEPS)
    check(res.loss < 1e-2 * res.loss_history[0], "Adam: the loss falls at least 100-fold")
    z = problem.space.to_unconstrained(res.theta)
    _, wall2, comp2 = timed(lambda: minimize_gradient(problem, max_steps=N_STEPS, tol=0, progress=False, z0=z))
    print(f"  a second call (same problem and settings, from where the first stopped): {wall2:.2f} s, of which "
          f"{comp2:.2f} s compiling")
    check(comp2 < 0.05, "the second call reuses the compiled loop")
    if wall > TARGET_ADAM_S: warn(f"{N_STEPS} Adam steps take {wall:.2f} s > {TARGET_ADAM_S} s (compilation included)")
    return res, wall, comp

def bench_cma(problem, true):
    "CMA-ES, population 32, 150 generations (std_tol=0: all of them)."
    res, wall, comp = timed(lambda: cma_es(problem, population_size=POPULATION, generations=GENERATIONS, std_tol=0.0,
                                           progress=False))
    run_s = wall - comp
    print(f"  cma_es, population {POPULATION}, {GENERATIONS} generations ({res.n_evaluations} runs): {wall:.2f} s in all "
          f"= {comp:.2f} s compiling + {run_s:.2f} s running ({run_s / GENERATIONS * 1e3:.1f} ms per generation, "
          f"{run_s / res.n_evaluations * 1e3:.2f} ms per run)")
    print(f"  loss {res.loss_history[0]:.4g} -> {res.loss:.4g}; recovered/true: {ratios(res.theta, true)}")
    check_result("CMA-ES", res, problem, GENERATIONS)
    check(all(abs(float(t) / v - 1) < 0.01 for t, v in zip(res.theta, true.values())),
          "CMA-ES: all three parameters within 1% of the truth")
    if wall > TARGET_CMA_S: warn(f"CMA-ES {POPULATION}x{GENERATIONS} takes {wall:.2f} s > {TARGET_CMA_S} s (compilation included)")
    return res

def cma_floor(problem):
    "Seconds that `cma_es` cannot go under here: its loop with a trivial fitness (compile + run), and the model's runs."
    from evosax.algorithms import CMA_ES
    from seapopym.optimize import _cma_loop
    # the same compiled loop (evosax's ask and tell, histories, bounds transform), with the model replaced by a quadratic
    trivial = types.SimpleNamespace(space=problem.space, loss=lambda z: jnp.sum((z - 1.0) ** 2))
    _, run_es = _cma_loop(trivial, CMA_ES, POPULATION, GENERATIONS, 1.0, 0.0, False)
    key, z0 = jax.random.PRNGKey(0), problem.space.initial()
    _, es_wall, es_comp = timed(lambda: run_es(key, z0))
    fitness = jax.jit(jax.vmap(problem.loss))
    population = z0 + 0.1 * jax.random.normal(jax.random.PRNGKey(1), (POPULATION, len(z0)), z0.dtype)
    _, _, fit_comp = timed(lambda: fitness(population))
    _, fit_wall, _ = timed(lambda: [fitness(population) for _ in range(GENERATIONS)][-1])
    floor = es_wall + fit_comp + fit_wall
    print(f"  floor: the same loop with a trivial fitness {es_wall:.2f} s ({es_comp:.2f} s compiling: evosax's ask and tell) "
          f"+ compiling the vmapped model {fit_comp:.2f} s + {GENERATIONS} x vmap({POPULATION}) model runs "
          f"{fit_wall:.2f} s = {floor:.2f} s")
    if floor > TARGET_CMA_S: warn(f"the CMA-ES target ({TARGET_CMA_S} s) is below this machine's floor ({floor:.2f} s)")

# %% 3. The compiled loop against a Python loop of jitted steps

def python_loop(problem, n_steps: int, learning_rate: float = 0.05):
    "Adam driven from Python: a jitted value_and_grad + optax update, called `n_steps` times; losses and last z."
    opt = optax.adam(learning_rate)

    @jax.jit
    def step(z, state):
        val, g = jax.value_and_grad(problem.loss)(z)
        updates, state = opt.update(g, state, z)
        return optax.apply_updates(z, updates), state, val

    z = problem.space.initial()
    state, losses = opt.init(z), []
    for _ in range(n_steps):
        z, state, val = step(z, state)
        losses.append(val)
    return np.asarray(jax.device_get(losses)), z

def compare_loops(label: str, problem, n_steps: int, compiled=None):
    "Wall, compile and run seconds of `minimize_gradient` and of the Python loop; checks they take the same steps."
    if compiled is None: compiled = timed(lambda: minimize_gradient(problem, max_steps=n_steps, tol=0, progress=False))
    res, wall_c, comp_c = compiled
    (losses, _), wall_p, comp_p = timed(lambda: python_loop(problem, n_steps))
    run_c, run_p = wall_c - comp_c, wall_p - comp_p
    print(f"  {label:<34}{n_steps:>6}{wall_c:>9.2f}{comp_c:>9.2f}{run_c / n_steps * 1e3:>10.3f}"
          f"{wall_p:>9.2f}{comp_p:>9.2f}{run_p / n_steps * 1e3:>10.3f}{run_p / run_c:>10.2f}{wall_p / wall_c:>10.2f}")
    # float32 sums in a different order drift apart slowly on this ill-conditioned problem: compare the first 50 steps
    k = min(50, n_steps)
    return np.allclose(res.loss_history[:k], losses[:k], rtol=1e-9 if args.x64 else 1e-3, atol=0)

def bench_loops(problem, adam):
    "Section 3 on the LMTL twin (reusing section 1's run) and, for contrast, on a 1x1 Lotka-Volterra fit."
    lv = compile_model(LOTKA_VOLTERRA, default_config("lotka_volterra"))
    truth = simulate(lv, ["prey"]).prey
    lv_problem = CalibrationProblem(lv, [Objective("prey", truth)],
                                    {k: Parameter(0.5 * float(lv.parameters[k]), 2 * float(lv.parameters[k]),
                                                  initial=1.3 * float(lv.parameters[k])) for k in ("alpha", "gamma")})
    print(f"\n  {'':<40}{'compiled loop':^28}{'Python loop of jitted steps':^28}{'speed-up':^20}")
    print(f"  {'problem':<34}{'steps':>6}{'wall s':>9}{'compile':>9}{'ms/step':>10}{'wall s':>9}{'compile':>9}{'ms/step':>10}"
          f"{'running':>10}{'in all':>10}")
    same = compare_loops(f"LMTL twin ({problem.model.n_steps} steps, 528 cohorts)", problem, N_STEPS, adam)
    check(same, "LMTL: the Python loop and minimize_gradient give the same losses over the first 50 steps")
    same = compare_loops(f"Lotka-Volterra 1x1 ({lv.n_steps} steps)", lv_problem, N_STEPS)
    check(same, "Lotka-Volterra: the Python loop and minimize_gradient give the same losses over the first 50 steps")

# %% 4. Where the time goes: single evaluations

@seapopym.functional("bench:production_smooth_everywhere",
                     units={"production": "g/m^2/s", "npp": "g/m^2/s", "energy_transfer": "1", "recruitment_age": "s",
                            "cohort_width": "s", "recruitment_width": "s", "dt": "s"},
                     outputs={"next_production": "g/m^2/s", "recruitment": "g/m^2/s"},
                     core_dims={"production": ["C"], "next_production": ["C"]})
def production_smooth_everywhere(production, npp, energy_transfer, recruitment_age, cohort_width, recruitment_width, dt):
    "`seapopym.lmtl.production_smooth` with the sigmoid evaluated on every cohort, not only where it is not saturated."
    recruit = lambda aged: _recruit(aged, jax.nn.sigmoid((_ages(aged.shape[-1], cohort_width) - recruitment_age) / recruitment_width))
    return _cohort_step(production, energy_transfer * npp, cohort_width, dt, recruit)

def everywhere_blueprint() -> Blueprint:
    "The smooth LMTL blueprint with `production_smooth_everywhere` in place of `production_smooth`."
    d = lmtl_blueprint(recruitment="smooth").to_dict()
    d["name"] += "_everywhere"
    for p in d["processes"]:
        if p["function"] == "lmtl:production_smooth": p["function"] = "bench:production_smooth_everywhere"
    return Blueprint.from_dict(d)

def median_ms(f, x, repeats: int) -> tuple:
    "(compile seconds of the first call, median milliseconds of the next `repeats` calls)."
    _, _, comp = timed(lambda: f(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(x))
        times.append(time.perf_counter() - t0)
    return comp, statistics.median(times) * 1e3

def bench_evaluations(model, obs, true):
    "Per-evaluation costs that set a floor under the loops' times, and the options that change them."
    params = twin_parameters(true)
    problem = CalibrationProblem(model, [Objective("biomass", obs)], params)
    z0 = problem.space.initial()
    population = z0 + 0.1 * jax.random.normal(jax.random.PRNGKey(1), (POPULATION, len(z0)), z0.dtype)
    chunked = CalibrationProblem(model, [Objective("biomass", obs)], params, chunk_size=73)
    n_short = 132  # enough for the truth's recruitment ages (46-72 days), not for the whole box of bounds
    short_model = dataclasses.replace(model, state={**model.state, "production": model.state["production"][..., :n_short]})
    short = CalibrationProblem(short_model, [Objective("biomass", obs)], params)
    dense = CalibrationProblem(compile_model(everywhere_blueprint(), model.config), [Objective("biomass", obs)], params)
    rows = [("loss", "forward run + loss", jax.jit(problem.loss), z0, 1),
            ("v&g", "value_and_grad", jax.jit(jax.value_and_grad(problem.loss)), z0, 1),
            ("vmap", f"vmap(loss) over {POPULATION} (as cma_es)", jax.jit(jax.vmap(problem.loss)), population, POPULATION),
            ("map", f"lax.map(loss) over {POPULATION}", jax.jit(lambda p: jax.lax.map(problem.loss, p)), population, POPULATION),
            ("chunk", "value_and_grad, chunk_size=73", jax.jit(jax.value_and_grad(chunked.loss)), z0, 1),
            ("short", f"value_and_grad, {n_short} cohorts*", jax.jit(jax.value_and_grad(short.loss)), z0, 1),
            ("short vmap", f"vmap(loss) over {POPULATION}, {n_short} cohorts*", jax.jit(jax.vmap(short.loss)), population, POPULATION),
            ("dense vmap", f"vmap(loss) over {POPULATION}, sigmoid everywhere**", jax.jit(jax.vmap(dense.loss)), population, POPULATION),
            ("dense v&g", "value_and_grad, sigmoid everywhere**", jax.jit(jax.value_and_grad(dense.loss)), z0, 1)]
    print(f"\n  {'evaluation':<42}{'compile s':>10}{'ms':>10}{'ms per run':>12}")
    ms = {}
    for key, label, f, x, n in rows:
        comp, t = median_ms(f, x, args.repeats)
        ms[key] = t
        print(f"  {label:<42}{comp:>10.2f}{t:>10.2f}{t / n:>12.3f}")
    print(f"  * cost only: {n_short} cohorts hold the truth's recruitment ages, not those of the whole box of bounds "
          f"(up to {model.state['production'].shape[-1]} days, one cohort a day)")
    print("  ** production_smooth with its sigmoid on all the cohorts, as before it skipped the saturated ones: same model")
    dense_losses, losses = jax.jit(jax.vmap(dense.loss))(population), jax.jit(jax.vmap(problem.loss))(population)
    check(np.allclose(dense_losses, losses, rtol=1e-9 if args.x64 else 1e-5, atol=0),
          "the sigmoid on a window and everywhere give the same losses over the population")
    short_loss, full_loss = float(short.loss(z0)), float(problem.loss(z0))
    check(abs(short_loss - full_loss) > 1e-3 * full_loss,
          f"cutting to {n_short} cohorts changes the loss at the start ({short_loss:.4g} vs {full_loss:.4g}): it is not "
          f"the same model over the bounds")
    print(f"\n  Floors from these medians (running only, no compilation): {N_STEPS} x value_and_grad = "
          f"{N_STEPS * ms['v&g'] / 1e3:.2f} s; {GENERATIONS} x vmap over {POPULATION} = {GENERATIONS * ms['vmap'] / 1e3:.2f} s "
          f"(lax.map: {GENERATIONS * ms['map'] / 1e3:.2f} s; sigmoid everywhere: {GENERATIONS * ms['dense vmap'] / 1e3:.2f} s)")

# %%

if __name__ == "__main__":
    t0 = time.perf_counter()
    print(f"seapopym {seapopym.__version__}, JAX {jax.__version__} on {jax.devices()[0].platform}, "
          f"{'float64' if args.x64 else 'float32'}, {os.cpu_count()} CPU cores, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    model, true, obs = lmtl_twin()
    problem = CalibrationProblem(model, [Objective("biomass", obs)], twin_parameters(true))
    print(f"\nThe twin: {model}; {model.state['production'].shape[-1]} production cohorts; {problem.n_observations} "
          f"clean biomass observations in 2001-2002; estimating {', '.join(ESTIMATED)} from half their true values")
    z_true = problem.space.to_unconstrained(jnp.asarray(list(true.values())))
    check(float(problem.loss(z_true)) < 1e-8 * float(problem.loss(problem.space.initial())),
          f"the loss vanishes at the truth ({float(problem.loss(z_true)):.3g}; at the start "
          f"{float(problem.loss(problem.space.initial())):.4g})")
    print(f"\n1. minimize_gradient: {N_STEPS} Adam steps, compilation included (target < {TARGET_ADAM_S} s)")
    res, wall, comp = bench_adam(problem, true)
    print(f"\n2. cma_es: population {POPULATION}, {GENERATIONS} generations, compilation included (target < {TARGET_CMA_S} s)")
    bench_cma(problem, true)
    cma_floor(problem)
    print("\n3. The compiled loop against a Python loop of jitted Adam steps (compile time apart; "
          "speed-up = Python / compiled)")
    bench_loops(problem, (res, wall, comp))
    print(f"\n4. Where the time goes: single evaluations on the twin (median of {args.repeats})")
    bench_evaluations(model, obs, true)
    print(f"\n{len(FAILURES)} failed check(s), {len(WARNINGS)} timing warning(s); {time.perf_counter() - t0:.0f} s in all")
    sys.exit(1 if FAILURES else 0)
