"""Online change of the site file (docs/online-change.md): edit the settings without stopping the scan.

``plan``     pure: what changed between two validated revisions, and whether it may change live.
``validate`` the child process that reads and validates a revision (``python -m runtime.online.validate``),
             so that parsing never competes with the scan thread for the interpreter.
``service``  on the I/O thread: the file watcher, the validation runs, the control socket's ``reload``.
"""
