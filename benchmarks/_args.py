"""The benchmarks' shared command line (`--x64`, `--repeats`), applied to the environment before JAX is imported."""
import argparse, os

def parse_args(doc: str, repeats: int, repeats_help: str, more=None) -> argparse.Namespace:
    "Parse `--x64`, `--repeats` and what `more(parser)` adds; set `JAX_PLATFORMS` (cpu unless set) and `JAX_ENABLE_X64`."
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--x64", action="store_true", help="run in float64 (sets JAX_ENABLE_X64)")
    parser.add_argument("--repeats", type=int, default=repeats, help=repeats_help)
    if more is not None: more(parser)
    args = parser.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.x64: os.environ["JAX_ENABLE_X64"] = "1"
    return args
