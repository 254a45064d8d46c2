"""The plain data every layer shares: selectors and flags (`selector`), platform
descriptions (`platforms`), realms and their patches (`realm`), plan nodes (`nodes`) and
where everything lives in the store (`layout`). Pure: no I/O beyond `Layout.ensure`.

May import: `ixd.wire`. The client lexes its command line with `selector` and `realm`, so
those stay import-light.
"""
