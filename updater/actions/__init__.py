"""What changes the engine: the safe replacement of containers, the swap helper, swarm
services, hooks and the update pass."""
