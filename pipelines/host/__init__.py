"""The machine a process runs on: CPU placement (core binding through /proc)."""
