"""Exit codes with a meaning between a process and the supervisor that restarts it."""

CANNOT_START = 78   # sysexits' EX_CONFIG: the config is refused or the port cannot be listened on;
                    # restarting cannot fix it, so the supervisor stops instead of retrying forever
