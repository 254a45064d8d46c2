"""What travels on the socket: the error hierarchy with its wire codes, msgpack frames and
messages (`frames`, sans-IO), the daemon's stricter checks (`protocol`), the ops and their
arguments (`ops`, the daemon's one check of a request), the event kinds (`events`), plain
records (`record`: messages, op arguments and the shared model are all of them), the
blocking socket transport the client and services use (`transport`), and the roff both
write their manual pages in (`roff`).

May import: the standard library, msgpack and `ixd` (the version) only. The client imports
this package, so nothing here may import trio, jinja2, dataclasses or typing at run time on
the client's path (tests/test_client_imports.py).
"""
