"""`surgflow configs [NAME]`: list the presets shipped with surgflow, or print one resolved."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?", default=None,
                        help="a preset name or YAML file: print it fully resolved (`extends` "
                             "applied, every key with its value)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied before printing (with NAME)")


def run(args) -> int:
    from surgflow.config import load_config, preset_summary, presets, to_yaml  # light: --help imports commands/

    if args.name is None:
        known = presets()
        width = max(len(n) for n in known)
        for name, path in known.items():
            print(f"{name:<{width}}  {preset_summary(path)}")
        print(f"\n{len(known)} presets in {next(iter(known.values())).parent}; use one by name: "
              "surgflow train NAME [key=value ...]")
        return 0
    print(to_yaml(load_config(args.name, args.overrides)), end="")
    return 0
