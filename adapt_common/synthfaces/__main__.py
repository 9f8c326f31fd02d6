"""SynthFaces command line.

    python -m adapt_common.synthfaces info
    python -m adapt_common.synthfaces preview --out grid.png [--faces 6] [--size 64]
    python -m adapt_common.synthfaces export --domain sketch --n 100 --out DIR [--size 64] [--split eval]
    python -m adapt_common.synthfaces fewshot --domain cat --shots 10 --out DIR [--size 64]
"""
from __future__ import annotations

import argparse
import sys


def _info() -> None:
    from . import ATTRIBUTE_VALUES, DOMAINS, SPLITS, describe_params, domain_prompt
    print("SynthFaces: procedural faces with ground truth\n")
    print("Domains:")
    for name, d in DOMAINS.items():
        print(f"  {name:<11} {d.kind:<10} {d.description}")
        print(f"  {'':<11} {'':<10} prompt: \"{domain_prompt(name)}\"")
    print("\nSplits (seed streams): " + ", ".join(f"{k}={v}" for k, v in SPLITS.items()))
    print("\nAttributes:")
    for a, v in ATTRIBUTE_VALUES.items():
        print(f"  {a:<12} {', '.join(v)}")
    print("\nParameters:")
    print(describe_params())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m adapt_common.synthfaces", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="print the domains, attributes and the parameter specification")
    p = sub.add_parser("preview", help="a grid with one row per domain")
    p.add_argument("--out", required=True)
    p.add_argument("--faces", type=int, default=6)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--domains", nargs="*", default=None)
    p.add_argument("--family", choices=["train", "validation", "test", "held-out"], default=None,
                   help="rows: photo, then the styles of this family (held-out: validation and test)")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--no-labels", action="store_true")
    e = sub.add_parser("export", help="PNG folder + metadata.jsonl")
    e.add_argument("--domain", required=True)
    e.add_argument("--n", type=int, required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--size", type=int, default=64)
    e.add_argument("--split", default="train")
    e.add_argument("--offset", type=int, default=0)
    f = sub.add_parser("fewshot", help="the fixed few-shot set of a domain")
    f.add_argument("--domain", required=True)
    f.add_argument("--shots", type=int, required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--size", type=int, default=64)
    args = ap.parse_args(argv)

    from . import get_domain, styles_of_family
    for name in [getattr(args, "domain", None)] + list(getattr(args, "domains", None) or []):
        if name is not None:
            try:
                get_domain(name)
            except KeyError as e:
                ap.error(str(e.args[0]))
    if getattr(args, "family", None):
        fams = ["validation", "test"] if args.family == "held-out" else [args.family]
        args.domains = ["photo"] + [n for f in fams for n in styles_of_family(f)]
    if args.cmd == "info":
        _info()
    elif args.cmd == "preview":
        from . import preview_grid
        preview_grid(args.out, n_faces=args.faces, size=args.size, domains=args.domains, offset=args.offset,
                     labels=not args.no_labels)
        print(f"wrote {args.out}")
    elif args.cmd == "export":
        from . import export_folder
        out = export_folder(args.domain, args.n, args.out, size=args.size, split=args.split, offset=args.offset)
        print(f"wrote {args.n} images of {args.domain} ({args.split}) and metadata.jsonl to {out}")
    elif args.cmd == "fewshot":
        from . import export_folder
        out = export_folder(args.domain, args.shots, args.out, size=args.size, split="fewshot")
        print(f"wrote the {args.shots}-shot set of {args.domain} and metadata.jsonl to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
