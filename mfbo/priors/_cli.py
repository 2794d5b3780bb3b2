"""``mfbo priors``: derive a GMP prior from data, check a prior file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser("priors", help="derive and check prior files",
                              description="Physics-derived and user prior files (see docs/priors.md).")
    sub = p.add_subparsers(dest="priors_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    d = sub.add_parser("derive", help="derive a GMP fingerprint prior from structures",
                       description="Nearest-neighbour distances per element pair and RDF shells of DATA -> a "
                                   "prior file over sigma_min, sigma_max, cutoff, ... with the reasoning as "
                                   "comments.")
    d.add_argument("data", help="structure file ASE can read (e.g. .traj, .xyz)")
    d.add_argument("--out", help="prior file to write (default: print to stdout)")
    d.add_argument("--png", help="write a PNG of the RDF with the chosen ranges marked")
    d.add_argument("--name", help="prior name (default: the --out file stem, else DATA stem + '_physics')")
    d.add_argument("--max-images", type=int, default=200, help="random subsample of at most N images (200)")
    d.add_argument("--seed", type=int, default=0, help="seed of the subsample (0)")
    d.add_argument("--r-max", type=float, default=8.0, help="neighbour-list radius in Å (8)")
    d.add_argument("--max-features", type=int, default=96, help="cap on the fingerprint length (96)")
    d.add_argument("--max-epochs", type=int, default=100, help="epoch fidelity upper bound and target (100)")
    d.set_defaults(func=_derive)

    c = sub.add_parser("check", help="validate a prior file and sample from it",
                       description="Parse a prior file (errors name file, line and field), list its parameters "
                                   "and constraints, and draw samples to check the constraints are feasible.")
    c.add_argument("file", help="prior file (TOML)")
    c.add_argument("--samples", type=int, default=5, help="samples to print (5)")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=_check)


def _derive(args: argparse.Namespace) -> int:
    from mfbo.errors import ConfigError
    from mfbo.priors._derive import derive_gmp_prior

    for flag, v in (("--max-images", args.max_images), ("--max-features", args.max_features),
                    ("--max-epochs", args.max_epochs)):
        if v < 1:
            raise ConfigError(f"{flag} must be >= 1, got {v}")
    if not args.r_max > 0:
        raise ConfigError(f"--r-max must be > 0 Å, got {args.r_max}")
    name = args.name or (Path(args.out).stem if args.out else None)
    derived = derive_gmp_prior(args.data, name=name, max_images=args.max_images, seed=args.seed,
                               r_max=args.r_max, max_features=args.max_features, max_epochs=args.max_epochs,
                               progress=sys.stderr.isatty())
    if args.out:
        path = derived.write(args.out)
        print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(derived.to_toml())
    if args.png:
        print(f"wrote {derived.plot(args.png)}", file=sys.stderr)
    r = derived.ranges
    print("sigma_min {:.3f}-{:.3f} Å, sigma_max {:.3f}-{:.3f} Å, cutoff {:.2f}-{:.2f} Å (shells {})".format(
        *r["sigma_min"], *r["sigma_max"], *r["cutoff"], ", ".join(f"{x:.2f}" for x in derived.stats.shells)),
        file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    from mfbo.errors import PriorError
    from mfbo.priors import ProductPrior, load_prior_file

    spec = load_prior_file(args.file)
    print(f"{args.file}: {spec.name or '(unnamed)'}")
    for pname, p in spec.design_space.items():
        rng = p.get("choices") if p["type"] == "categorical" else p.get("bounds")
        belief = p.get("prior", {}).get("dist", "uniform")
        print(f"  {pname:<18} {p['type']:<12} {str(rng):<28} {p.get('scale', ''):<4} belief: {belief}")
    for fname, f in spec.fidelities.items():
        print(f"  {fname:<18} fidelity     {str(f['bounds']):<28}      target {f.get('target', f['bounds'][1])}")
    for c in spec.constraints:
        print(f"  constraint: {c}")
    try:
        samples = spec.prior.sample(max(args.samples, 0), seed=args.seed)
    except PriorError as exc:
        if not isinstance(spec.prior, ProductPrior) and "does not implement sample" in str(exc):
            print(f"  (the custom prior has no sample(): {exc})")
            return 0
        raise
    for s in samples:
        print("  sample:", {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in s.items()})
    return 0
