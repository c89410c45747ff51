"""`fashion-rerank demo`: the whole system end to end on the bundled catalog (`demo.run`)."""

from __future__ import annotations

import argparse
import sys

from demo.run import DemoError, config_from_args, run_demo


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 done, 2 stopped by an error (the message says which step), 130 interrupted."""
    try:
        run_demo(config_from_args(args))
    except DemoError as exc:
        print(f"\ndemo stopped: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndemo interrupted", file=sys.stderr)
        return 130
    return 0
