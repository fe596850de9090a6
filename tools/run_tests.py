"""Run each notebook's tests with nbdev (one process per notebook), then build and check the docs.

Prints one line per test and ends with `N passed, N failed`; exits non-zero on any failure or when nothing ran."""
import argparse, glob, json, os, subprocess, sys, time
from pathlib import Path
from nbdev.config import get_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Runs in a fresh interpreter per notebook: nbdev's own `test_nb` prints the failing cell's traceback to stderr
_CHILD = "import json,sys; from nbdev.test import test_nb; sys.exit(0 if test_nb(**json.loads(sys.argv[1]))[0] else 1)"

def _skipped(p, base):
    "True if `p` (under `base`) or one of its folders starts with `_` or `.`, as nbdev skips them"
    return any(part[0] in '_.' for part in p.relative_to(base).parts)

def find_notebooks(nbs_path, patterns=()):
    "Notebooks under `nbs_path`, or those matching the paths/globs in `patterns`"
    if not patterns: return sorted(p for p in nbs_path.rglob('*.ipynb') if not _skipped(p, nbs_path))
    found = set()
    for pat in patterns:
        for m in map(Path, glob.glob(pat, recursive=True)):
            if m.is_dir(): found |= {p for p in m.rglob('*.ipynb') if not _skipped(p, m)}
            elif m.suffix == '.ipynb': found.add(m)
    return sorted(p.resolve() for p in found)

def _run(cmd, cwd):
    "Run `cmd`, returning (ok, combined output, seconds)"
    start = time.time()
    res = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    return res.returncode == 0, res.stdout, time.time() - start

def test_notebook(fn, cfg, force_flags):
    "Test notebook `fn` in a fresh process, skipping cells flagged with `tst_flags` unless forced"
    skip = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags or [])
    kw = dict(fn=str(fn), skip_flags=skip, force_flags=force_flags, basepath=str(cfg.config_path), cell_timeout=cfg.cell_timeout or None)
    return _run([sys.executable, '-c', _CHILD, json.dumps(kw)], cwd=cfg.nbs_path)

def test_docs():
    "Build the doc site in a fresh process, then check it"
    ok, out, secs = _run([sys.executable, str(HERE/'build_docs.py')], cwd=ROOT)
    if not ok: return False, out, secs
    sys.path.insert(0, str(HERE))
    import build_docs
    start = time.time()
    problems = build_docs.check(ROOT)
    return not problems, '\n'.join(problems), secs + time.time() - start

def _report(name, ok, out, secs):
    "Print the result line for one test, and its output if it failed"
    print(f"{'PASS' if ok else 'FAIL'} {name} ({secs:.1f}s)", flush=True)
    if not ok: print('\n'.join('    ' + l for l in out.rstrip().splitlines()), flush=True)
    return ok

def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('paths', nargs='*', help='notebooks, folders or globs to test (default: every notebook under nbs/)')
    p.add_argument('--slow', action='store_true', help='also run cells flagged `#| slow`')
    p.add_argument('--docs', dest='docs', action='store_true', default=None, help='build and check the docs (default unless paths are given)')
    p.add_argument('--no-docs', dest='docs', action='store_false', help='skip the docs check')
    args = p.parse_args()
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
    cfg = get_config(ROOT)
    fns = find_notebooks(cfg.nbs_path, args.paths)
    if not fns: print(f"No notebooks found in {' '.join(args.paths) or cfg.nbs_path}", file=sys.stderr, flush=True)
    force = ['slow'] if args.slow else []
    results = [_report(os.path.relpath(fn), *test_notebook(fn, cfg, force)) for fn in fns]
    if fns and (args.docs if args.docs is not None else not args.paths): results.append(_report('docs (build_docs.py + --check)', *test_docs()))
    sys.stderr.flush()
    print(f"{results.count(True)} passed, {results.count(False)} failed", flush=True)
    return 0 if fns and all(results) else 1

if __name__ == '__main__': sys.exit(main())
