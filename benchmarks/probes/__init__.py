"""One-off measurements from the kernel work, kept to reproduce figures quoted in README.md and benchmarks/NOTES.md.

Run each from the repository root as ``python -m benchmarks.probes.<name>``; see README.md in this folder.
"""
