"""Worker side: secrets on tmpfs (``secretsfs``) and tasks run with them at /run/secrets (``executor``).

Kept free of imports: the executor re-executes itself as a helper, and every import here would slow each task start.
"""
