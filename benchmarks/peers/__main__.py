"""python -m benchmarks.peers: install the bench's peers (see benchmarks/peers/__init__.py)."""

from benchmarks.peers import main

main()
