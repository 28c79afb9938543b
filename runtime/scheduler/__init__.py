"""The scheduler: waiting queue, running batch, radix-cache admission and one step at a time."""
