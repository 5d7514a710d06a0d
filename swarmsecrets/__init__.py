"""swarmsecrets: Docker Swarm-style secrets for fleets of Linux VMs."""

__version__ = "0.1.0"
