import sys


def unload(name):
    """Free a module only needed once (boot-time checks, tables): on a board its code
    lives in RAM, so drop it from sys.modules and from its package."""
    sys.modules.pop(name, None)
    pkg, _, leaf = name.rpartition(".")
    parent = sys.modules.get(pkg)
    if parent is not None and leaf in parent.__dict__:
        delattr(parent, leaf)
