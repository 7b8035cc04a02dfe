"""The operator's `pubip` command: plan, listen, status, the operations through the listener, and the lab.

main.py parses and dispatches; each command's module is imported only when that command runs, so
`pubip plan` pays for the allocation engine alone. The composition root: the only place (with the tests)
that imports the lab.
"""
