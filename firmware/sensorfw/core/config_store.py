# The board's configuration file (config.json, or settings.toml on CircuitPython),
# replaced atomically: the new text goes to <file>.tmp, which is then renamed over the
# file. A reset at any moment leaves the old file or the new one, never a torn one:
# - during the write of .tmp: the old file is intact, the .tmp is dropped at boot;
# - after it, before the rename: the same (the change was not acknowledged either);
# - inside a rename that removes the old file first (FAT on some ports): only the
#   complete .tmp is left, and the boot takes it (recover()).
# Loaded only when a configuration change arrives, and by the entry points at boot.

import os


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def replace(path, text):
    """Write text to path atomically (temp file + rename). Raises OSError."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    try:
        os.rename(tmp, path)  # replaces path on the unix port, LittleFS and MicroPython's FAT
    except OSError:
        # a rename that will not replace: remove, then rename (recover() covers the gap)
        os.remove(path)
        os.rename(tmp, path)


def recover(path):
    """At boot, before the file is read: finish or drop a replacement a reset cut short.
    Returns what was done ("kept", "restored" or None) for the boot log."""
    tmp = path + ".tmp"
    if not _exists(tmp):
        return None
    if _exists(path):
        os.remove(tmp)  # the old file is whole; the change was never acknowledged
        return "kept"
    os.rename(tmp, path)  # cut between removing the old file and the rename: .tmp is whole
    return "restored"
