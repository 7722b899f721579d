"""`podbrief` sub-commands, one module per area. Each module exposes `register(subparsers)`.

A command's handler takes the parsed `argparse.Namespace` and returns the process exit code.
"""
