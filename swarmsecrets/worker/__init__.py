"""Worker side: the session with the leader (``agent``), converging to the assignments (``reconcile``),
secrets on tmpfs (``secretsfs``) and tasks run with them at /run/secrets (``executor``).

Kept free of imports: the executor re-executes itself as a helper, and every import here would slow each task start.
"""
