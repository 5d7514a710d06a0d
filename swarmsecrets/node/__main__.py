"""``python -m swarmsecrets.node``: start swarmsecretsd."""

from swarmsecrets.node.main import main

main()
